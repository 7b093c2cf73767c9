"""Shared set-up for the benchmarks: the images they measure on, and timing helpers."""

from __future__ import annotations

import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from core.data import ImageRecord, Split, load_split  # noqa: E402
from core.images import decode_image  # noqa: E402
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


def timed_detections(loaded, records: list[ImageRecord], input_size=None, progress: bool = True):
    """Detections for ``records`` one image at a time (as the app runs them) and each one's seconds."""
    from core.predict import detect

    first = [decode_image(records[0].path, exif_transpose=False)] if records else []
    detect(loaded, first, batch_size=1, input_size=input_size)  # warm-up: allocator, oneDNN kernels
    detections, seconds = [], []
    for index, record in enumerate(records, 1):
        image = decode_image(record.path, exif_transpose=False)
        started = time.perf_counter()
        detections += detect(loaded, [image], batch_size=1, input_size=input_size)
        seconds.append(time.perf_counter() - started)
        if progress and index % 200 == 0:
            print(f"  {index}/{len(records)} images, median {median_ms(seconds):.1f} ms", flush=True)
    return detections, seconds
