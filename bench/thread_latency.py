"""Reading latency on the main thread against a new thread, as Streamlit runs a page.

Streamlit runs each rerun of a page in a thread of its own, not the main thread. On a 2-core machine, torch's
OpenMP intra-op threads read an image more slowly from such a thread than from the main one, so the Detect page's
"ms per image" is higher than ``bench/inference.py``'s. This times the same images, one at a time (the first
of each round not counted: it warms up), on the main thread and on new threads with each intra-op thread count.

    python bench/thread_latency.py --data ../shared/real-dev/svhn-test-grey-1000 --split test --images 30
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch

from common import ROOT  # noqa: F401  (puts the project on sys.path)
from core.data import load_split
from core.images import decode_image
from core.predict import detect, load_model


def _round_ms(loaded, images, threads: int) -> float:
    """Median ms per image over ``images`` with ``threads`` intra-op threads, in the calling thread."""
    torch.set_num_threads(threads)
    seconds = []
    for image in images:
        started = time.perf_counter()
        detect(loaded, [image])
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[1:]) * 1000


def _in_new_thread(loaded, images, threads: int) -> float:
    result: list[float] = []
    worker = threading.Thread(target=lambda: result.append(_round_ms(loaded, images, threads)))
    worker.start()
    worker.join()
    return result[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=None, help="checkpoint (default: the shipped one)")
    parser.add_argument("--data", required=True, help="a labelled folder in the course layout")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.images < 2:
        raise SystemExit("--images must be at least 2 (the first one of each round only warms up)")
    loaded = load_model(args.ckpt, "cpu")
    records = load_split(args.data, args.split).records[:args.images]
    images = [decode_image(record.path, exif_transpose=False) for record in records]
    most = torch.get_num_threads()
    counts = sorted({1, most})
    print(f"{len(images)} images of {args.data} ({args.split}), {args.rounds} rounds; median ms per image")
    for round_ in range(1, args.rounds + 1):
        for threads in counts:
            main_ms = _round_ms(loaded, images, threads)
            new_ms = _in_new_thread(loaded, images, threads)
            print(f"round {round_}  intra-op threads {threads}:  main thread {main_ms:6.1f}   new thread {new_ms:6.1f}"
                  f"   ({new_ms / main_ms:.2f}x)", flush=True)
    torch.set_num_threads(most)


if __name__ == "__main__":
    main()
