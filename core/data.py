"""Reading the course layout: ``train/ valid/ test/`` image folders with COCO json files.

Annotation files are validated up front; every problem names the file, image id and
annotation id, so a bad dataset stops training before any work is done (or, with
``skip_invalid``, the images it concerns are dropped and counted).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from PIL import ExifTags, Image

from core.images import MAX_PIXELS, list_images, numeric_stem

NUM_DIGITS = 10
# A dataset may also box letters (core.synth --letter-boxes): a model trained on them learns letters as a
# class of its own, where letters left as background only teach it to doubt every glyph.
LETTER_ID, LETTER_NAME = NUM_DIGITS + 1, "letter"
BOX_TOLERANCE = 1.0  # px a box may overhang the border (annotation-tool rounding); it is clipped
MAX_LISTED_PROBLEMS = 25


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    image_id: Any = None
    annotation_id: Any = None

    def __str__(self) -> str:
        where = [os.path.basename(os.path.normpath(self.file))]  # "DIR/" is named DIR, not ""
        if self.image_id is not None:
            where.append(f"image {self.image_id}")
        if self.annotation_id is not None:
            where.append(f"annotation {self.annotation_id}")
        return f"{', '.join(where)}: {self.message}"


def listed(problems: Sequence[Problem]) -> list[str]:
    """The first MAX_LISTED_PROBLEMS problems as lines, and how many more there are."""
    lines = [str(p) for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"... and {len(problems) - MAX_LISTED_PROBLEMS} more")
    return lines


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; ``problems`` lists everything found."""

    def __init__(self, problems: Sequence[Problem] | str, summary: str | None = None, skippable: bool = False):
        self.skippable = skippable  # every problem is tied to one image: --skip-invalid would drop those and go on
        if isinstance(problems, str):  # re-raised from a DataLoader worker, which passes the message only
            self.problems = []
            super().__init__(problems)
            return
        self.problems = list(problems)
        head = summary or f"{len(self.problems)} problem(s) in the dataset"
        super().__init__(head + ":\n  " + "\n  ".join(listed(self.problems)))


@dataclass
class ImageRecord:
    image_id: int
    path: str
    width: int
    height: int
    boxes: list[list[float]] = field(default_factory=list)  # xyxy, pixels
    labels: list[int] = field(default_factory=list)  # 1..10 = digit 0..9
    annotation_ids: list[Any] = field(default_factory=list)
    letters: list[list[float]] = field(default_factory=list)  # xyxy boxes of category LETTER_ID: never scored

    @property
    def number(self) -> str:
        """The whole house number: digits read left to right (Task 2's ground truth)."""
        order = sorted(range(len(self.boxes)), key=lambda i: (self.boxes[i][0] + self.boxes[i][2]) / 2)
        return "".join(str(self.labels[i] - 1) for i in order) or "-1"


@dataclass
class Split:
    name: str
    root: str
    records: list[ImageRecord]
    dropped: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  # used as they are (a rotated photo); worth a look

    def dropped_note(self) -> str:
        """What --skip-invalid left out of this split, each image listed (core.evaluate and bench/real.py say it)."""
        return (f"--skip-invalid: {self.dropped} image(s) with problems are not scored:\n  "
                + "\n  ".join(listed(self.problems)))

    @property
    def has_letters(self) -> bool:
        """Whether any image boxes letters (category ``LETTER_ID``): a model trained on it needs a letter class."""
        return any(r.letters for r in self.records)

    def coco(self) -> dict:
        """Ground truth as an in-memory COCO dict (with ``info``: pycocotools >= 2.0.9 needs it)."""
        images, annotations = [], []
        next_id = 1
        for r in self.records:
            images.append({"id": r.image_id, "file_name": os.path.basename(r.path), "width": r.width,
                           "height": r.height})
            for box, label in zip(r.boxes, r.labels):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append({"id": next_id, "image_id": r.image_id, "category_id": label,
                                    "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
                next_id += 1
        return {"info": {"description": f"{self.root} {self.name}"}, "licenses": [], "images": images,
                "annotations": annotations, "categories": categories()}


def declares_letters(coco: dict) -> bool:
    """Whether a COCO file's ``categories`` declare letter boxes (``LETTER_ID`` named ``LETTER_NAME``)."""
    return any(isinstance(c, dict) and _is_letter_category(c) for c in coco.get("categories") or [])


def _is_letter_category(category: dict) -> bool:
    # Declared by name: an 11th digit class would be a mistake.
    return category.get("id") == LETTER_ID and category.get("name") == LETTER_NAME


def categories() -> list[dict]:
    return [{"id": d + 1, "name": str(d)} for d in range(NUM_DIGITS)]


# ------------------------------------------------------------------ validation


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DatasetError([Problem(path, "file not found")], f"cannot read {path}") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"  # some of json's messages end in "at", some do not
        what = f"{exc.msg} {where}" if exc.msg.endswith(" at") else f"{exc.msg} at {where}"
        raise DatasetError([Problem(path, f"malformed JSON: {what}")], f"cannot read {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError([Problem(path, f"unreadable ({exc})")], f"cannot read {path}") from None


def clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> list[float] | None:
    """``[x, y, w, h]`` clipped to a ``width`` x ``height`` image as ``[x0, y0, x1, y1]``; None when
    nothing of it is left inside."""
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:
        return None
    return [x0, y0, x1, y1]


def exif_orientation(image: Image.Image) -> int:
    """An opened image's EXIF orientation, 2..8 when viewers turn or flip it, else 1; from the header only:
    a PNG's own getexif decodes every pixel to look for an eXIf chunk after the image data."""
    if image.format == "TIFF":
        return 1  # Pillow's TIFF reader turns the picture itself: its size and pixels are those viewers show
    try:
        orientation = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, struct.error):
        return 1  # an unreadable EXIF block turns nothing in Pillow either
    return orientation if orientation in range(2, 9) else 1


def image_frame(path: str) -> tuple[tuple[int, int], int]:
    """The stored size and the EXIF orientation (1: shown as stored), from the header only; OSError for a file
    that is no image, or one so large Pillow refuses to open it (a decompression bomb is refused the same way)."""
    try:
        with Image.open(path) as handle:
            return handle.size, exif_orientation(handle)
    except Image.DecompressionBombError as exc:
        raise OSError(f"too large to open ({exc})") from None


class _Findings:
    """The problems found in one annotation file, the ids of the images they concern, and warnings:
    what training uses as it is but a person should look at."""

    def __init__(self, json_path: str) -> None:
        self.json_path = json_path
        self.problems: list[Problem] = []
        self.bad_images: set[int] = set()
        self.warnings: list[Problem] = []

    def report(self, message: str, image_id: Any = None, annotation_id: Any = None) -> None:
        self.problems.append(Problem(self.json_path, message, image_id, annotation_id))
        if _is_int(image_id):
            self.bad_images.add(image_id)

    def warn(self, message: str, image_id: Any = None) -> None:
        self.warnings.append(Problem(self.json_path, message, image_id))


def validate_coco(coco: Any, json_path: str,
                  image_dir: str) -> tuple[list[ImageRecord], list[Problem], set[int], list[Problem]]:
    """Check a COCO dict; returns (records, problems, ids of images with problems, warnings)."""
    found = _Findings(json_path)
    if not _has_coco_shape(coco, found):
        return [], found.problems, found.bad_images, found.warnings
    known_categories = _known_categories(coco, found)
    records: dict[int, ImageRecord] = {}
    seen_files: dict[str, int] = {}
    for index, image in enumerate(coco["images"]):
        record = _image_record(index, image, image_dir, records, seen_files, found)
        if record is not None:
            records[record.image_id] = record
    seen_annotations: set[Any] = set()
    for index, ann in enumerate(coco["annotations"]):
        _add_annotation(index, ann, records, known_categories, seen_annotations, found)
    if not coco["images"]:
        found.report("the split has no images")
    return [records[k] for k in sorted(records)], found.problems, found.bad_images, found.warnings


def _has_coco_shape(coco: Any, found: _Findings) -> bool:
    if not isinstance(coco, dict):
        found.report(f"expected a JSON object with images/annotations/categories, got {type(coco).__name__}")
        return False
    for key in ("images", "annotations"):
        if key not in coco:
            found.report(f"missing key {key!r}")
        elif not isinstance(coco[key], list):
            found.report(f"{key!r} must be a list, got {type(coco[key]).__name__}")
    return not found.problems


def _known_categories(coco: dict, found: _Findings) -> set[int]:
    """1..10, plus the letter class where ``categories`` declares it by name."""
    known = set(range(1, NUM_DIGITS + 1))
    if "categories" not in coco:
        return known
    cats = coco["categories"]
    if not isinstance(cats, list) or not all(isinstance(c, dict) and _is_int(c.get("id")) for c in cats):
        found.report("'categories' must be a list of objects with integer ids")
        return known
    for c in cats:
        if _is_letter_category(c):
            known.add(LETTER_ID)
        elif c["id"] not in known:
            found.report(f"category id {c['id']} (name {c.get('name')!r}) is outside 1..10 (digits 0..9)")
        elif "name" in c and str(c["name"]) != str(c["id"] - 1):
            # SVHN's own convention (10 = "0") would silently shift every digit by one.
            found.report(f"category id {c['id']} is named {c['name']!r}; ids 1..10 must mean digits 0..9 "
                         f"(id {c['id']} = digit {c['id'] - 1})")
    return known


def _image_record(index: int, image: Any, image_dir: str, records: dict[int, ImageRecord],
                  seen_files: dict[str, int], found: _Findings) -> ImageRecord | None:
    """The record of ``images[index]``, or None (with the reason reported) when it cannot be used."""
    if not isinstance(image, dict):
        found.report(f"images[{index}] is not an object")
        return None
    image_id = image.get("id")
    if not _is_int(image_id):
        found.report(f"images[{index}] has a missing or non-integer id ({image_id!r})")
        return None
    if image_id in records:
        found.report("duplicate image id", image_id)
        return None
    file_name = image.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        found.report("missing or non-string file_name", image_id)
        return None
    if os.path.isabs(file_name) or ".." in file_name.replace("\\", "/").split("/"):
        found.report(f"file_name {file_name!r} points outside the image folder", image_id)
        return None
    if file_name in seen_files:
        found.report(f"file {file_name} is also used by image {seen_files[file_name]}", image_id)
    seen_files[file_name] = image_id
    width, height = image.get("width"), image.get("height")
    if (width is not None and not _is_int(width)) or (height is not None and not _is_int(height)):
        found.report(f"width/height must be integers, got {width!r}x{height!r}", image_id)
        return None
    path = os.path.join(image_dir, file_name)
    actual = _readable_size(path, file_name, image_id, found)
    if actual is None:
        return None
    if width is not None and (width, height) != actual:
        found.report(f"json says {width}x{height} but {file_name} is {actual[0]}x{actual[1]}", image_id)
        return None
    return ImageRecord(image_id, path, *actual)


def _readable_size(path: str, file_name: str, image_id: int, found: _Findings) -> tuple[int, int] | None:
    """The image's size when the whole file decodes and is within the pixel limit."""
    if not os.path.isfile(path):
        found.report(f"image file missing: {path}", image_id)
        return None
    try:
        with Image.open(path) as handle:
            actual = handle.size
            if actual[0] * actual[1] > MAX_PIXELS:
                found.report(f"image {file_name} is {actual[0]}x{actual[1]}, over the {MAX_PIXELS // 10**6} Mpx limit",
                             image_id)
                return None
            orientation = exif_orientation(handle)  # before verify(), which leaves the file unusable
            handle.verify()  # reads the whole file: truncated or corrupt data fails here, not mid-epoch
    except Exception as exc:  # noqa: BLE001 - any decoder failure means an unusable file
        found.report(f"unreadable image file {path} ({type(exc).__name__}: {exc})", image_id)
        return None
    if orientation != 1:
        # Phone photos: labelling tools draw on the turned picture, training reads the stored one.
        found.warn(f"{file_name} is stored rotated (EXIF orientation {orientation}): its boxes are read against its "
                   f"stored {actual[0]}x{actual[1]} pixels, while viewers (and the Detect page) show it turned; if "
                   "its boxes were drawn on the upright photo, convert its source again with core.convert (yolo, "
                   "or voc with the upright <size>), which writes it upright", image_id)
    return actual


def _add_annotation(index: int, ann: Any, records: dict[int, ImageRecord], known_categories: set[int],
                    seen_annotations: set[Any], found: _Findings) -> None:
    """Adds ``annotations[index]`` to its image's record, or reports why it cannot be used."""
    if not isinstance(ann, dict):
        found.report(f"annotations[{index}] is not an object")
        return
    ann_id = ann.get("id", f"#{index}")
    image_id = ann.get("image_id")
    if not _is_int(image_id):
        image_id = image_id if isinstance(image_id, (str, float)) else repr(image_id)
    if "id" not in ann:
        found.report("annotation has no id", image_id, ann_id)
    elif not _is_int(ann_id) and not isinstance(ann_id, str):
        found.report(f"annotation id {ann_id!r} is not an integer", image_id, f"#{index}")
        return
    elif ann_id in seen_annotations:
        found.report("duplicate annotation id", image_id, ann_id)
        return
    seen_annotations.add(ann_id)
    if not _is_int(image_id) or image_id not in records:
        if not (_is_int(image_id) and image_id in found.bad_images):
            found.report(f"image_id {image_id!r} is not an image of this file",
                         image_id if _is_int(image_id) else None, ann_id)
        return
    record = records[image_id]
    category = ann.get("category_id")
    if not _is_int(category) or category not in known_categories:
        found.report(f"unknown category_id {category!r} (expected 1..10 for digits 0..9, or {LETTER_ID} when "
                     f"'categories' declares it as {LETTER_NAME!r})", image_id, ann_id)
        return
    clipped = _checked_box(ann.get("bbox"), record, image_id, ann_id, found)
    if clipped is None:
        return
    if category == LETTER_ID:
        record.letters.append(clipped)
        return
    record.boxes.append(clipped)
    record.labels.append(category)
    record.annotation_ids.append(ann_id)


def _checked_box(bbox: Any, record: ImageRecord, image_id: int, ann_id: Any,
                 found: _Findings) -> list[float] | None:
    """``bbox`` clipped to the image, or None (reported) when it is malformed, empty or outside."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        found.report(f"bbox must be [x, y, w, h] numbers, got {bbox!r}", image_id, ann_id)
        return None
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        found.report(f"box has zero or negative size (w={w:g}, h={h:g})", image_id, ann_id)
        return None
    if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > record.width + BOX_TOLERANCE \
            or y + h > record.height + BOX_TOLERANCE:
        found.report(f"box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the {record.width}x{record.height} image",
                     image_id, ann_id)
        return None
    clipped = clip_box(x, y, w, h, record.width, record.height)
    if clipped is None:
        found.report("box is degenerate after clipping to the image", image_id, ann_id)
    return clipped


@dataclass
class SplitCheck:
    """Every problem of one split (``check_split``), and what training could still use."""

    name: str
    json_path: str
    records: list[ImageRecord]  # the images without a problem
    problems: list[Problem]
    fatal: list[Problem]  # not tied to one image: --skip-invalid cannot drop them
    dropped: int  # images with a problem: what --skip-invalid drops
    listed: int  # images the JSON lists
    warnings: list[Problem] = field(default_factory=list)  # used as they are; worth a look

    @property
    def empty(self) -> bool:
        """A split that lists no image and has nothing else wrong (core.synth --train 0 writes one)."""
        return self.listed == 0 and len(self.problems) == 1


def check_split(root: str, split: str) -> SplitCheck:
    """Read ``root/split.json`` and check it against the images in ``root/split/`` (each file decoded whole);
    a missing folder or file, or JSON that does not parse, raises DatasetError."""
    json_path = os.path.join(root, f"{split}.json")
    image_dir = os.path.join(root, split)
    if not os.path.isdir(root):
        why = (f"is a file: pass the dataset folder (DIR with train/ and train.json), e.g. "
               f"{os.path.dirname(root) or '.'}" if os.path.isfile(root) else "dataset folder not found")
        raise DatasetError([Problem(root, why)], f"cannot use dataset {root}")
    if not os.path.isdir(image_dir):
        raise DatasetError([Problem(image_dir, f"image folder {split}/ not found")], f"cannot use dataset {root}")
    if not os.path.isfile(json_path):
        raise DatasetError([Problem(json_path, "annotation file not found")], f"cannot use dataset {root}")
    coco = read_json(json_path)
    records, problems, bad_images, warnings = validate_coco(coco, json_path, image_dir)
    fatal = [p for p in problems if p.image_id is None or p.image_id not in bad_images]
    images = coco.get("images") if isinstance(coco, dict) else None
    listed_ids = {img.get("id") for img in images if isinstance(img, dict)} if isinstance(images, list) else set()
    return SplitCheck(split, json_path, [r for r in records if r.image_id not in bad_images], problems, fatal,
                      len(bad_images & listed_ids), len(images) if isinstance(images, list) else 0, warnings)


def load_split(root: str, split: str, skip_invalid: bool = False, require_annotations: bool = True) -> Split:
    """Read and validate ``root/split.json`` against ``root/split/`` (:func:`check_split`).

    Raises DatasetError listing every problem, unless ``skip_invalid``: then images with
    problems are dropped (``Split.dropped``) and only file-level problems still raise.
    Without ``require_annotations`` a split with no JSON is its images alone (ids from their names).
    """
    json_path = os.path.join(root, f"{split}.json")
    image_dir = os.path.join(root, split)
    if not require_annotations and os.path.isdir(image_dir) and not os.path.isfile(json_path):
        return Split(split, root, [ImageRecord(image_id_from_name(p), p, 0, 0) for p in list_images(image_dir)])
    check = check_split(root, split)
    if check.problems and (not skip_invalid or check.fatal):
        raise DatasetError(check.problems, f"{json_path}: {len(check.problems)} problem(s)"
                           + (" that --skip-invalid cannot skip" if skip_invalid and check.fatal else ""),
                           skippable=not check.fatal)
    if not check.records:
        raise DatasetError(check.problems or [Problem(json_path, "no usable images")], f"{json_path}: nothing usable")
    return Split(split, root, check.records, dropped=check.dropped, problems=check.problems, warnings=check.warnings)


def image_id_from_name(path: str) -> int:
    number = numeric_stem(path)
    if number is None:
        raise ValueError(f"{os.path.basename(path)}: image ids come from numeric file names like 123.png")
    return number


def describe_check(check: SplitCheck) -> list[str]:
    """A split's check as lines: what it holds, then its problems (``python -m core.data`` and the Data page)."""
    digits = sum(len(r.boxes) for r in check.records)
    letters = sum(len(r.letters) for r in check.records)
    head = (f"{check.name}: {len(check.records)} usable image(s), {digits} digit box(es)"
            + (f", {letters} letter box(es)" if letters else ""))
    if check.empty:
        return [f"{check.name}: no images ({os.path.basename(check.json_path)} lists none); "
                "nothing to train on or score"]
    warned = [f"{len(check.warnings)} warning(s) (training and evaluation use these images as they are):",
              *("  " + line for line in listed(check.warnings))] if check.warnings else []
    if not check.problems:
        return [f"{head}; no problems", *warned]
    if check.fatal:
        verdict = (f"{len(check.problems)} problem(s), {len(check.fatal)} of them not tied to one image: training "
                   "and evaluation refuse this split until the file is fixed")
    else:
        verdict = (f"{len(check.problems)} problem(s) in {check.dropped} image(s): training and evaluation refuse "
                   "the split as it is; --skip-invalid (core.train, core.evaluate) drops those images")
    return [head, verdict, *("  " + line for line in listed(check.problems)), *warned]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.data",
        description="Check a dataset in the course layout before training on it: every annotation against its "
                    "image, every image file decoded whole. Exit status 0: no problem (warnings, listed, may "
                    "remain); 2: problems, listed.")
    parser.add_argument("root", help="the dataset folder (train/ with train.json, valid/ with valid.json, ...)")
    parser.add_argument("--split", action="append", choices=["train", "valid", "test"],
                        help="check only this split (repeatable; default: all)")
    args = parser.parse_args(argv)
    from core.browse import SPLIT_ORDER, find_splits, why_not_a_dataset

    splits = args.split or find_splits(args.root)
    unlabelled = [] if args.split else [s for s in SPLIT_ORDER if s not in splits
                                         and os.path.isdir(os.path.join(args.root, s))]
    if not splits and not unlabelled:
        print(f"core.data: error: {why_not_a_dataset(args.root, args.root).replace('`', '')}", file=sys.stderr)
        return 2
    clean = True
    for split in splits:
        try:
            check = check_split(args.root, split)
            lines, clean = describe_check(check), clean and (check.empty or not check.problems)
        except DatasetError as exc:
            lines, clean = [f"{split}: {exc}"], False
        print("\n".join(lines))
    for split in unlabelled:  # the course's test/ comes without test.json
        print(f"{split}: {len(list_images(os.path.join(args.root, split)))} image(s) without {split}.json: "
              "core.predict reads them; nothing can score them")
    return 0 if clean else 2


if __name__ == "__main__":
    sys.exit(main())
