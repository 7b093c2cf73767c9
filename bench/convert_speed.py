"""Converting SVHN-sized inputs: images/s and peak memory of ``core.convert svhn``, and how long the
Data page's tables take to read the result. No real SVHN needed.

    python bench/convert_speed.py [--images 30000] [--small 3000]

Writes (once, cached under data/) SVHN format 1 folders of ``--small`` and ``--images`` PNGs: real
rendered number crops (a pool of 400 reused under new file numbers) with a ``digitStruct.mat`` in
SVHN's exact structure (``core.convert.write_svhn_mat``), 1-5 digits per image. Each conversion
runs in its own process so its peak resident memory is its own; the two sizes show whether memory
grows with the dataset (SVHN's ``extra`` is 202,353 images).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

from common import ROOT
from core import synth
from core.browse import read_split_table
from core.convert import write_svhn_mat

POOL = 400


def make_svhn_folder(out: str, count: int) -> None:
    if os.path.isfile(os.path.join(out, "digitStruct.mat")):
        return
    print(f"bench/convert_speed: writing {count} images in SVHN format 1 to {out}", flush=True)
    work = out + ".partial"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    fonts = synth.usable_fonts()
    pool = []
    for index in range(POOL):
        rng, np_rng = synth.sample_rngs(77, "svhn-format1", index)
        image, boxes = synth.render_sample(rng, fonts, np_rng)
        path = os.path.join(work, f"pool-{index}.png")
        image.save(path)
        pool.append((path, [(d if d else 10, x, y, w, h) for x, y, w, h, d in boxes] or [(1, 0, 0, 1, 1)]))
    entries = []
    shuffle = random.Random(0)
    for number in range(1, count + 1):
        path, digits = pool[shuffle.randrange(POOL)]
        os.link(path, os.path.join(work, f"{number}.png"))
        entries.append((f"{number}.png", digits))
    for path, _ in pool:
        os.remove(path)
    write_svhn_mat(os.path.join(work, "digitStruct.mat"), entries)
    os.replace(work, out)


CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from core.convert import convert
started = time.perf_counter()
report = convert("svhn", {src!r}, {out!r}, valid_fraction=0.1, seed=0, progress_stream=None)
print(json.dumps({{"seconds": time.perf_counter() - started, "images": sum(report.images.values()),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def convert_in_child(src: str, out: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    code = CHILD.format(root=ROOT, src=src, out=out)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=30000)
    parser.add_argument("--small", type=int, default=3000)
    args = parser.parse_args()
    rows = []
    for count in (args.small, args.images):
        src = os.path.join(ROOT, "data", f"bench-svhn-format1-{count}")
        make_svhn_folder(src, count)
        out = os.path.join(ROOT, "data", f"bench-svhn-converted-{count}")
        figures = convert_in_child(src, out)
        started = time.perf_counter()
        table = read_split_table(out, "train")
        figures["browse_s"] = time.perf_counter() - started
        figures["boxes"] = len(table.boxes)
        rows.append((count, figures))
    for count, f in rows:
        print(f"SVHN format 1, {count} images -> course layout (copy, 10% valid): {f['seconds']:.1f} s, "
              f"{f['images'] / f['seconds']:.0f} images/s, peak memory {f['peak_mib']:.0f} MiB; "
              f"Data page tables for its train split ({f['boxes']} boxes): {f['browse_s']:.2f} s")
    (small, a), (large, b) = rows
    print(f"{large // small}x the images: {b['seconds'] / a['seconds']:.1f}x the time, "
          f"{b['peak_mib'] / a['peak_mib']:.2f}x the peak memory. At this rate SVHN extra (202,353 images) "
          f"takes about {202353 / (b['images'] / b['seconds']) / 60:.0f} min.")


if __name__ == "__main__":
    main()
