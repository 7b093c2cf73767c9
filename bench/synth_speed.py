"""Generator speed on one core: images rendered per second, and with each PNG written as the dataset is.

    python bench/synth_speed.py [--images 600] [--reference-rev b983388]

Times this version of core.synth beside generator version 2 (core/synth.py at git revision
``--reference-rev``, loaded from git into a temporary module), on the same fonts, one process,
three rounds each; prints medians and the ratio. Version 3 draws more per image on average
(scenes up to 1,280 px, padding canvases), so images/s alone understates it: the mean pixel count
per image is printed too.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import ROOT
from core import synth


def load_reference(rev: str):
    source = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:core/synth.py"], check=True, capture_output=True,
                            text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "synth_reference.py")
    with open(path, "w") as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("synth_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def rate(module, fonts, count: int, write_to: str | None) -> tuple[float, float]:
    started = time.perf_counter()
    pixels = 0
    for index in range(1, count + 1):
        image, _ = module.generate_sample(0, "train", index, fonts)
        pixels += image.size[0] * image.size[1]
        if write_to:
            image.save(os.path.join(write_to, f"{index}.png"), compress_level=1)
    return count / (time.perf_counter() - started), pixels / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--reference-rev", default="b983388", help="a git revision with generator version 2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    fonts = synth.usable_fonts()
    reference = load_reference(args.reference_rev)
    print(f"bench/synth_speed: {len(fonts)} font sources, {args.images} images per round, one process", flush=True)
    rows = {}
    versions = ((f"v{synth.GENERATOR_VERSION} (this)", synth),
                (f"v{reference.GENERATOR_VERSION} ({args.reference_rev})", reference))
    for name, module in versions:
        for mode in ("render", "render + PNG"):
            rates, pixels = [], 0.0
            for _ in range(args.rounds):
                with tempfile.TemporaryDirectory() as tmp:
                    r, pixels = rate(module, fonts, args.images, tmp if mode != "render" else None)
                rates.append(r)
            rows[(name, mode)] = (statistics.median(rates), pixels)
            print(f"  {name:<22} {mode:<13} median {statistics.median(rates):7.1f} images/s "
                  f"({', '.join(f'{r:.0f}' for r in rates)}); mean {pixels / 1e3:.0f} kpx/image", flush=True)
    names = list(dict.fromkeys(n for n, _ in rows))
    for mode in ("render", "render + PNG"):
        ratio = rows[(names[0], mode)][0] / rows[(names[1], mode)][0]
        print(f"{mode}: {names[0]} runs at {ratio:.2f}x the images/s of {names[1]}")


if __name__ == "__main__":
    main()
