"""What a dataset in the course layout holds, read from its annotation files alone.

The Data page shows counts, histograms and pages of images from these tables; nothing here opens
an image, so a 30,000-image split is summarised in about a second (``bench/convert_speed.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from core.data import LETTER_ID, NUM_DIGITS, DatasetError, Problem, declares_letters, read_json

SPLIT_ORDER = ("train", "valid", "test")


@dataclass(frozen=True)
class SplitTable:
    """One split: ``images`` (image_id, file_name, width, height, digits, number) and ``boxes``
    (image_id, digit, x, y, w, h), both in image id order; ``number`` is read left to right.
    ``letters`` (image_id, x, y, w, h) holds the letter boxes of a dataset that declares them
    (``core.synth --letter-boxes``), empty otherwise. ``left_out``: the boxes not in the tables, each a
    Problem naming its image and annotation (a category that is no digit)."""

    root: str
    split: str
    images: pd.DataFrame
    boxes: pd.DataFrame
    letters: pd.DataFrame
    left_out: list[Problem] = field(default_factory=list)

    @property
    def image_dir(self) -> str:
        return os.path.join(self.root, self.split)

    def boxes_of(self, image_id: int) -> pd.DataFrame:
        return self.boxes[self.boxes["image_id"] == image_id]

    def letters_of(self, image_id: int) -> pd.DataFrame:
        return self.letters[self.letters["image_id"] == image_id]


def data_root(project_root: str) -> str:
    return os.environ.get("DIGIT_STUDIO_DATA", os.path.join(project_root, "data"))


def find_splits(root: str) -> list[str]:
    """Splits of ``root`` that have both ``<split>.json`` and a ``<split>/`` folder: train, valid, test first."""
    if not os.path.isdir(root):
        return []
    names = [n[:-5] for n in os.listdir(root) if n.endswith(".json") and os.path.isdir(os.path.join(root, n[:-5]))]
    return sorted(names, key=lambda n: (SPLIT_ORDER.index(n) if n in SPLIT_ORDER else len(SPLIT_ORDER), n))


def find_datasets(folder: str) -> list[str]:
    """Folders directly under ``folder``: those holding a split first, newest first, then the others
    (a raw download or an image folder: the pages say what to do with them)."""
    if not os.path.isdir(folder):
        return []
    found = [os.path.join(folder, n) for n in os.listdir(folder)
             if not n.startswith(".") and os.path.isdir(os.path.join(folder, n))]
    return sorted(found, key=lambda p: (not find_splits(p), -os.path.getmtime(p)))


def why_not_a_dataset(folder: str, root: str) -> str:
    """What to do with ``folder`` (as the user typed it; ``root``: resolved) when it holds no split."""
    if not os.path.isdir(root):
        return f"`{folder}` is not a folder."
    if os.path.isfile(os.path.join(root, "digitStruct.mat")):
        return (f"`{folder}` is SVHN's format 1 (`digitStruct.mat`), not the course layout: convert it first with "
                f"`python -m core.convert svhn --src {folder} --out data/svhn`.")
    parent, name = os.path.split(os.path.normpath(root))
    if os.path.isfile(os.path.join(parent, f"{name}.json")):
        return f"`{folder}` is the image folder of a split: open its parent, `{os.path.dirname(os.path.normpath(folder))}`."
    return (f"`{folder}` holds no split: expected a `<split>/` image folder with its `<split>.json` "
            f"(e.g. `train/` and `train.json`).")


def read_split_table(root: str, split: str) -> SplitTable:
    """The split's tables; a file that is not COCO-shaped raises DatasetError naming it.
    (``core.data.load_split`` validates every image too: training and evaluation use that.)"""
    json_path = os.path.join(root, f"{split}.json")
    coco = read_json(json_path)
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list) \
            or not isinstance(coco.get("annotations", []), list):
        raise DatasetError([Problem(json_path, "expected a COCO object with 'images' and 'annotations' lists")],
                           f"cannot browse {json_path}")
    try:
        images = pd.DataFrame([(im["id"], im["file_name"], im.get("width"), im.get("height"))
                               for im in coco["images"]], columns=["image_id", "file_name", "width", "height"])
        # Letter boxes (core.synth --letter-boxes) are training targets, not digits of the number.
        letter_id = LETTER_ID if declares_letters(coco) else None
        annotations = coco.get("annotations", [])
        # A box whose category is no digit is left out of the tables (named in ``left_out``), so the split's
        # other images can still be looked at; training refuses it (core.data).
        outside = [a for a in annotations if a["category_id"] != letter_id
                   and not (isinstance(a["category_id"], int) and 1 <= a["category_id"] <= NUM_DIGITS)]
        left_out = [Problem(json_path, f"category_id {a['category_id']!r} is outside 1..10 (digits 0..9): left out of "
                                       "these tables", a["image_id"], a.get("id")) for a in outside]
        skipped = {id(a) for a in outside}
        boxes = pd.DataFrame([(a["image_id"], a["category_id"] - 1, *a["bbox"]) for a in annotations
                              if a["category_id"] != letter_id and id(a) not in skipped],
                             columns=["image_id", "digit", "x", "y", "w", "h"])
        letters = pd.DataFrame([(a["image_id"], *a["bbox"]) for a in annotations if a["category_id"] == letter_id],
                               columns=["image_id", "x", "y", "w", "h"]).astype({"image_id": "int64"})
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError([Problem(json_path, f"an image or annotation lacks a field or has the wrong shape ({exc!r})")],
                           f"cannot browse {json_path}") from None
    boxes = boxes.astype({"image_id": "int64", "digit": "int64"})
    ordered = boxes.assign(centre=boxes["x"] + boxes["w"] / 2).sort_values(["image_id", "centre"], kind="stable")
    numbers = ordered.groupby("image_id")["digit"].agg(lambda s: "".join(map(str, s)))
    counts = ordered.groupby("image_id").size()
    images = images.sort_values("image_id", kind="stable").reset_index(drop=True)
    images["digits"] = images["image_id"].map(counts).fillna(0).astype(int)
    images["number"] = images["image_id"].map(numbers).fillna("-1")
    return SplitTable(root, split, images, ordered.drop(columns="centre").reset_index(drop=True),
                      letters.sort_values(["image_id", "x"], kind="stable").reset_index(drop=True), left_out)


def select_images(table: SplitTable, digit: int | None = None, length: int | None = None) -> pd.DataFrame:
    """Images holding ``digit`` and whose number has ``length`` digits (None: any)."""
    chosen = table.images
    if digit is not None:
        chosen = chosen[chosen["image_id"].isin(table.boxes.loc[table.boxes["digit"] == digit, "image_id"])]
    if length is not None:
        chosen = chosen[chosen["digits"] == length]
    return chosen


def page_of(rows: pd.DataFrame, page: int, per_page: int) -> pd.DataFrame:
    """Page ``page`` (from 1) of ``rows``; past the end gives the last page."""
    pages = max(1, -(-len(rows) // per_page))
    page = min(max(1, page), pages)
    return rows.iloc[(page - 1) * per_page: page * per_page]
