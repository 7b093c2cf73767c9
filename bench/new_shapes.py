"""Latency of images whose size the process has not read before, against the same images read again.

oneDNN builds (and caches) its convolution kernels per input shape, so the first read at a new padded size costs
more than later reads at it. The dev set is one size (226x208); real uploads are of every size. This reads
``--images`` house numbers drawn at as many different sizes (deterministic: Pillow's own font, ``--seed``), one at a
time, ``--rounds`` times in a row; round 1 meets every size for the first time.

    python bench/new_shapes.py [--ckpt checkpoints/default.pt] [--images 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from common import median_ms  # noqa: E402
from core.predict import detect, load_model  # noqa: E402


def drawn_numbers(count: int, seed: int) -> list[Image.Image]:
    """``count`` numbers drawn dark on light grey, each image of its own size (60-400 x 40-300 px)."""
    rng = random.Random(seed)
    images, sizes = [], set()
    while len(images) < count:
        size = (rng.randint(60, 400), rng.randint(40, 300))
        if size in sizes:
            continue
        sizes.add(size)
        image = Image.new("RGB", size, (rng.randint(150, 250),) * 3)
        font = ImageFont.load_default(size=max(12, size[1] // 2))
        ImageDraw.Draw(image).text((size[0] // 6, size[1] // 6), str(rng.randint(1, 999)), font=font, fill=(20, 20, 30))
        images.append(image)
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="checkpoint (default: checkpoints/default.pt)")
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    loaded = load_model(args.ckpt, "cpu")
    images = drawn_numbers(args.images, args.seed)
    detect(loaded, [Image.new("RGB", (226, 208), "white")])  # the process's own first read, not any size's
    print(f"bench/new_shapes: {args.images} images of {args.images} sizes, one at a time, {args.rounds} rounds")
    for round_number in range(1, args.rounds + 1):
        seconds = []
        for image in images:
            started = time.perf_counter()
            detect(loaded, [image])
            seconds.append(time.perf_counter() - started)
        what = "every size new" if round_number == 1 else "every size read before"
        print(f"  round {round_number} ({what}): median {median_ms(seconds):.1f} ms/image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
