"""How much larger than the ink are a dataset's digit boxes? Per side, by digit height.

    python bench/box_convention.py --data ../shared/real-dev/svhn-test-grey-1000 --split test

For every box: Otsu threshold inside the box, ink = the side of the threshold the box's own
border ring is not on (annotators leave background at the edge), ink extent = the rows and
columns holding ink. Prints the margin on each side as a fraction of the box height, overall
and by box height, then the medians as a fraction of the ink height: the unit of the generator's
``core.synth.BoxConvention`` (ink height = box height x the ink/box ratio).
Reads the dataset by path; nothing is copied.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.data import load_split  # noqa: E402


def otsu(values: np.ndarray) -> float:
    hist = np.bincount(values.ravel().astype(np.int64), minlength=256).astype(np.float64)
    total = hist.sum()
    cum = np.cumsum(hist)
    cum_mean = np.cumsum(hist * np.arange(256))
    mean = cum_mean[-1] / total
    between = (mean * cum - cum_mean) ** 2 / np.maximum(cum * (total - cum), 1e-9)
    return float(np.argmax(between))


def ink_extent(grey: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the ink inside a box crop, None when the crop has no contrast."""
    if grey.shape[0] < 4 or grey.shape[1] < 3 or grey.max() - grey.min() < 24:
        return None
    t = otsu(grey)
    ring = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    ink = grey > t if np.median(ring) <= t else grey <= t
    cols, rows = ink.sum(axis=0), ink.sum(axis=1)
    # A column or row counts when it holds a real stroke, not a stray pixel of noise.
    col_idx = np.flatnonzero(cols >= max(1, 0.08 * grey.shape[0]))
    row_idx = np.flatnonzero(rows >= max(1, 0.08 * grey.shape[1]))
    if len(col_idx) == 0 or len(row_idx) == 0:
        return None
    return int(col_idx[0]), int(row_idx[0]), int(col_idx[-1]) + 1, int(row_idx[-1]) + 1


SIDES = ("left", "top", "right", "bottom")


def measure_boxes(pairs: Iterable[tuple[np.ndarray, Sequence[Sequence[float]]]], inner_only: bool = False
                  ) -> dict[str, np.ndarray]:
    """Margins of every box of ``(grey image, [(x0, y0, x1, y1), ...])`` pairs whose ink can be found;
    ``inner_only`` skips boxes that reach the image's edge (clipped there: no margin on that side)."""
    sides: dict[str, list[float]] = {k: [] for k in SIDES + ("height", "ink_h_over_box_h")}
    for grey, boxes in pairs:
        for x0, y0, x1, y1 in boxes:
            bx0, by0, bx1, by1 = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
            if inner_only and (bx0 < 1 or by0 < 1 or bx1 > grey.shape[1] - 1 or by1 > grey.shape[0] - 1):
                continue
            extent = ink_extent(grey[by0:by1, bx0:bx1])
            if extent is None:
                continue
            h = by1 - by0
            ix0, iy0, ix1, iy1 = extent
            sides["left"].append(ix0 / h)
            sides["top"].append(iy0 / h)
            sides["right"].append((bx1 - bx0 - ix1) / h)
            sides["bottom"].append((h - iy1) / h)
            sides["height"].append(h)
            sides["ink_h_over_box_h"].append((iy1 - iy0) / h)
    return {k: np.asarray(v) for k, v in sides.items()}


def dataset_pairs(data: str, split: str) -> Iterator[tuple[np.ndarray, list]]:
    for record in load_split(data, split).records:
        yield np.asarray(Image.open(record.path).convert("L"), dtype=np.float32), record.boxes


def measure(data: str, split: str, inner_only: bool = False) -> dict[str, np.ndarray]:
    return measure_boxes(dataset_pairs(data, split), inner_only)


def in_ink_heights(m: dict[str, np.ndarray]) -> dict[str, float]:
    """The median margins as fractions of the ink height: the unit of ``core.synth.BoxConvention``."""
    ratio = float(np.median(m["ink_h_over_box_h"]))
    return {side: float(np.median(m[side])) / ratio for side in SIDES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    m = measure(args.data, args.split)
    n = len(m["height"])
    print(f"{n} boxes with measurable ink; margins as a fraction of the box height (median [p25, p75])")

    def row(label: str, mask: np.ndarray) -> str:
        cells = [f"{np.median(m[s][mask]):.3f} [{np.percentile(m[s][mask], 25):.3f}, {np.percentile(m[s][mask], 75):.3f}]"
                 for s in SIDES + ("ink_h_over_box_h",)]
        return f"{label:<14} n={int(mask.sum()):<5} " + "  ".join(cells)

    print(f"{'':<22} {'left':<22}{'top':<22}{'right':<22}{'bottom':<22}ink height / box height")
    print(row("all", np.ones(n, bool)))
    for lo, hi in ((0, 16), (16, 20), (20, 25), (25, 32), (32, 48), (48, 1000)):
        mask = (m["height"] >= lo) & (m["height"] < hi)
        if mask.sum() >= 10:
            print(row(f"h {lo}-{hi} px", mask))
    print("as a fraction of the ink height (core.synth.BoxConvention's unit): " + "  ".join(
        f"{side} {value:.3f}" for side, value in in_ink_heights(m).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
