"""Score a checkpoint on any labelled folder in the course layout, as real data is scored.

    python bench/real.py --data ../shared/real-dev/svhn-test-grey-1000 --split test [--ckpt FILE]

Prints Task 1 (mAP@[.5:.95], AP50, AP75), Task 2 (whole-number accuracy, overall and by number
length) and the median milliseconds per image, timed one image at a time as the app runs them.
Reads the folder by path and copies nothing out of it. The real dev set in ../shared is for
measurement only: never train, tune a threshold or pick a checkpoint on it.
"""

from __future__ import annotations

import argparse
import json
import sys

from common import ROOT, median_ms, timed_detections
from core.checkpoint import CheckpointError, atomic_write_text
from core.data import DatasetError, load_split
from core.evaluate import score_detections
from core.outputs import check_output_file
from core.predict import load_model, parse_input_size


def score(ckpt: str, data: str, split_name: str, input_size=None, device: str = "auto", limit: int | None = None,
          progress: bool = True, skip_invalid: bool = False) -> dict:
    split = load_split(data, split_name, skip_invalid=skip_invalid)
    if split.dropped:
        print(split.dropped_note(), file=sys.stderr, flush=True)
    if limit:
        split.records = split.records[:limit]
    loaded = load_model(ckpt, device)
    detections, seconds = timed_detections(loaded, split.records, input_size, progress)
    metrics = score_detections(split, detections, loaded.reader)
    metrics["median_ms"] = median_ms(seconds)
    metrics["mean_ms"] = 1000 * sum(seconds) / max(len(seconds), 1)
    metrics.update(checkpoint=ckpt, data=data, split=split_name, task2_reader=loaded.reader.describe(),
                   inference=loaded.inference_note(input_size))
    return metrics


def print_report(m: dict) -> None:
    print(f"{m['data']} ({m['split']}, {m['images']} images), {m['checkpoint']}")
    print(f"  inference: {m['inference']}; Task 2: {m['task2_reader']}")
    print(f"  Task 1  mAP@[.5:.95] {m['mAP']:.3f}   AP50 {m['AP50']:.3f}   AP75 {m['AP75']:.3f}")
    print(f"  Task 2  whole-number accuracy {m['task2_accuracy']:.3f}")
    for length, row in m["task2_by_length"].items():
        print(f"          {length}-digit numbers: {row['accuracy']:.3f} ({row['correct']}/{row['images']})")
    print(f"  speed   median {m['median_ms']:.1f} ms/image (mean {m['mean_ms']:.1f}), one image at a time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder in the course layout")
    parser.add_argument("--split", default="test", help="split with labels: train, valid or test (default test)")
    parser.add_argument("--ckpt", default=f"{ROOT}/checkpoints/default.pt")
    parser.add_argument("--input-size", default=None,
                        help="'auto' (the checkpoint's own policy, the default) or a fixed short side in px")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N images")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="score the other images of a split in which some have problems (each one is listed)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit {args.limit}: score at least 1 image (leave it out to score them all)")
    try:
        check_output_file(args.json, "--json")
        metrics = score(args.ckpt, args.data, args.split, parse_input_size(args.input_size), args.device, args.limit,
                        skip_invalid=args.skip_invalid)
    except (DatasetError, CheckpointError, ValueError) as exc:
        print(f"bench/real.py: error: {exc}", file=sys.stderr)
        if isinstance(exc, DatasetError) and exc.skippable:
            print("bench/real.py: --skip-invalid scores the other images", file=sys.stderr)
        return 2
    print_report(metrics)
    if args.json:
        atomic_write_text(args.json, json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
