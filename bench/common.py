"""Shared set-up for the benchmarks: the images they measure on, and timing helpers."""

from __future__ import annotations

import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.data import Split, load_split  # noqa: E402
from core.synth import generate_dataset, usable_fonts  # noqa: E402


def validation_images(data: str | None, count: int, cache_dir: str) -> Split:
    """The first ``count`` images of a dataset's valid split; a synthetic one is made when absent."""
    if data is None:
        data = os.path.join(cache_dir, f"bench-valid-{count}")
        if not os.path.exists(os.path.join(data, "valid.json")):
            print(f"bench: generating {count} synthetic validation images in {data}", flush=True)
            generate_dataset(data, {"train": 0, "valid": count}, seed=12345, fonts=usable_fonts())
    split = load_split(data, "valid")
    if len(split.records) < count:
        raise SystemExit(f"{data} has only {len(split.records)} validation images; {count} asked for")
    split.records = split.records[:count]
    return split


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000
