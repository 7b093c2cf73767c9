"""Reading latency on the main thread against a new thread, as Streamlit runs a page.

Streamlit runs each rerun of a page in a thread of its own, not the main thread. On a 2-core machine, torch's
OpenMP intra-op threads read an image more slowly from such a thread than from the main one, so the Detect page's
"ms per image" is higher than ``bench/inference.py``'s. This times the same images, one at a time after a
warm-up read (``common.timed_detections``), on the main thread and on new threads with each intra-op thread count.

    python bench/thread_latency.py --data ../shared/real-dev/svhn-test-grey-1000 --split test --images 30
"""

from __future__ import annotations

import argparse
import threading

import torch

from common import median_ms, timed_detections
from core.data import load_split
from core.predict import load_model


def _round_ms(loaded, records, threads: int) -> float:
    """Median ms per image over ``records`` with ``threads`` intra-op threads, in the calling thread."""
    torch.set_num_threads(threads)
    _, seconds = timed_detections(loaded, records, progress=False)
    return median_ms(seconds)


def _in_new_thread(loaded, records, threads: int) -> float:
    result: list[float] = []
    worker = threading.Thread(target=lambda: result.append(_round_ms(loaded, records, threads)))
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
    if args.images < 1:
        raise SystemExit("--images must be at least 1")
    loaded = load_model(args.ckpt, "cpu")
    records = load_split(args.data, args.split).records[:args.images]
    most = torch.get_num_threads()
    counts = sorted({1, most})
    print(f"{len(records)} images of {args.data} ({args.split}), {args.rounds} rounds; median ms per image")
    for round_ in range(1, args.rounds + 1):
        for threads in counts:
            main_ms = _round_ms(loaded, records, threads)
            new_ms = _in_new_thread(loaded, records, threads)
            print(f"round {round_}  intra-op threads {threads}:  main thread {main_ms:6.1f}   new thread {new_ms:6.1f}"
                  f"   ({new_ms / main_ms:.2f}x)", flush=True)
    torch.set_num_threads(most)


if __name__ == "__main__":
    main()
