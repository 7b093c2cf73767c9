"""Reading latency on the main thread against new threads, as Streamlit runs a page.

Streamlit runs each rerun of a page in a new thread; its main thread serves the browser and never runs the model.
This times the same images, each configuration in a process of its own, with each intra-op thread count:

- main: the model loaded and read on the main thread (as ``bench/inference.py`` reads);
- new: loaded and read on one new thread, the main thread running no torch at all;
- new after main: the main thread loads the model and reads one image first, then a new thread reads;
- each: loaded on one new thread, then every image read once on a new thread of its own (as one upload after
  another reaches the Detect page), the first read of each thread included.

On a 2-core machine (2026-11-28) two OpenMP threads read a dev image as fast on a new thread as on the main one,
unless the main thread has run torch itself ("new after main": 1.5-1.8x slower); the app's main thread never
does. README "The app's threads" has the figures.

    python bench/thread_latency.py --data ../shared/real-dev/svhn-test-grey-1000 --split test --images 30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

import torch

from common import median_ms, timed_detections
from core.data import DatasetError, load_split
from core.images import decode_image
from core.predict import detect, load_model

MODES = {"main": "main", "new": "new", "after": "new after main", "each": "new per image"}


def _in_new_thread(work):
    result: list = []
    worker = threading.Thread(target=lambda: result.append(work()))
    worker.start()
    worker.join()
    return result[0]


def _read_once(loaded, record) -> float:
    image = decode_image(record.path, exif_transpose=False)
    started = time.perf_counter()
    detect(loaded, [image], batch_size=1)
    return time.perf_counter() - started


def _one_configuration(ckpt, records, mode: str) -> float:
    """Median ms per image of one configuration, in this process."""
    if mode == "main":
        return median_ms(timed_detections(load_model(ckpt, "cpu"), records, progress=False)[1])
    if mode == "new":
        return median_ms(_in_new_thread(lambda: timed_detections(load_model(ckpt, "cpu"), records,
                                                                 progress=False)[1]))
    if mode == "after":
        loaded = load_model(ckpt, "cpu")
        _read_once(loaded, records[0])
        return median_ms(_in_new_thread(lambda: timed_detections(loaded, records, progress=False)[1]))
    loaded = _in_new_thread(lambda: load_model(ckpt, "cpu"))
    _in_new_thread(lambda: _read_once(loaded, records[0]))  # the first read anywhere: allocator, oneDNN kernels
    return median_ms([_in_new_thread(lambda record=record: _read_once(loaded, record)) for record in records])


def _in_fresh_process(args, mode: str, threads: int) -> float:
    """One configuration in a process of its own, so that none inherits another's threads."""
    command = [sys.executable, os.path.abspath(__file__), "--data", args.data, "--split", args.split,
               "--images", str(args.images), "--one", mode]
    if args.ckpt:
        command += ["--ckpt", args.ckpt]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{MODES[mode]} with {threads} threads failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _parse_counts(text: str | None, most: int) -> list[int]:
    try:
        counts = sorted({int(n) for n in text.split(",")}) if text else sorted({1, most})
    except ValueError:
        raise SystemExit(f"--threads {text!r}: give whole numbers, e.g. 1,2,4") from None
    if counts[0] < 1:
        raise SystemExit("--threads: each count must be at least 1")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=None, help="checkpoint (default: the shipped one)")
    parser.add_argument("--data", required=True, help="a labelled folder in the course layout")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", default=None,
                        help="intra-op thread counts to time, comma-separated (default: 1 and all)")
    parser.add_argument("--one", choices=MODES, default=None, help=argparse.SUPPRESS)  # in a child process
    args = parser.parse_args()
    if args.images < 1:
        raise SystemExit("--images must be at least 1")
    try:
        records = load_split(args.data, args.split).records[:args.images]
    except DatasetError as exc:
        raise SystemExit(f"--data: {exc}") from None
    if args.one:
        print(_one_configuration(args.ckpt, records, args.one))
        return
    most = torch.get_num_threads()
    counts = _parse_counts(args.threads, most)
    print(f"{len(records)} images of {args.data} ({args.split}), {args.rounds} rounds, each configuration in a "
          f"process of its own; torch's own count {most}; median ms per image (x: against main)")
    for round_ in range(1, args.rounds + 1):
        for threads in counts:
            ms = {mode: _in_fresh_process(args, mode, threads) for mode in MODES}
            print(f"round {round_}  intra-op threads {threads:2d}:  " + "   ".join(
                f"{name} {ms[mode]:6.1f}" + ("" if mode == "main" else f" ({ms[mode] / ms['main']:.2f}x)")
                for mode, name in MODES.items()), flush=True)


if __name__ == "__main__":
    main()
