"""Bring labelled digits into the course layout: SVHN format 1, Pascal VOC XML, YOLO txt.

    python -m core.convert svhn --src SVHN/train --out DATA [--valid-fraction 0.1] [--seed 0]
    python -m core.convert svhn --src SVHN/test --out DATA --split test
    python -m core.convert voc  --src DIR --out DATA [--split train]
    python -m core.convert yolo --src DIR --out DATA [--split train]

Writes ``DATA/<split>/<id>.<ext>`` (images copied byte for byte, or hard-linked with ``--link``),
``DATA/<split>.json`` (COCO; category_id 1..10 = digit 0..9; ``[x, y, w, h]`` boxes clipped to the
image) and ``DATA/<split>.sources.csv`` (image id -> source file), which ``core.train``,
``core.evaluate`` and the app read unchanged. Boxes refer to the stored pixels; a photo stored rotated
(EXIF orientation) whose labels were drawn on it as viewers show it (YOLO's always are; VOC's as its
``<size>`` says) is written upright instead, in its own format and without the tag.

Records are read and written one at a time (SVHN's ``extra`` has 202,353 images), the COCO file is
assembled from spooled fragments, and a split appears under ``DATA`` only when it is complete: the
run writes into a hidden folder and renames it at the end. Every problem names its file and record;
``--skip-invalid`` converts the rest and lists every dropped record in ``DATA/<split>.dropped.txt``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from PIL import Image, ImageOps

from core.data import DatasetError, Problem, categories, clip_box, image_frame, listed
from core.events import ProgressBar
from core.images import IMAGE_SUFFIXES, numeric_stem
from core.outputs import check_output_dir

SVHN_FIELDS = ("height", "label", "left", "top", "width")
PARTIAL_PREFIX = ".convert-"
DROPPED_SUFFIX = ".dropped.txt"  # DATA/<split>.dropped.txt: every record --skip-invalid left out of the split
LOSSY_FORMATS = ("JPEG", "WEBP", "AVIF", "HEIF")  # re-encoded at quality 95 when written upright


class ConvertError(DatasetError):
    """A conversion that cannot go ahead; the message names the files and records."""


@dataclass
class SourceImage:
    """One image of the source with its digit boxes ``(x, y, w, h, digit, place)`` in source pixels; ``place``
    names the box in the source's own terms for messages: "line 3" of a YOLO file, "object 2" of a VOC file."""

    image_id: int
    path: str
    boxes: list[tuple[float, float, float, float, int, str]]
    where: str  # the record, for messages: "digitStruct.mat, record 17 (17.png)"
    upright: bool = False  # its boxes refer to the picture as viewers turn it (EXIF orientation): written so
    warning: str = ""  # about its orientation: reported when the image is written


@dataclass
class Report:
    images: dict[str, int] = field(default_factory=dict)
    digits: dict[str, int] = field(default_factory=dict)
    dropped: list[Problem] = field(default_factory=list)  # invalid records (with --skip-invalid)
    empty_boxes: list[Problem] = field(default_factory=list)  # zero-area after clipping: dropped
    clipped: list[Problem] = field(default_factory=list)  # ran over 1 px past the image: clipped and kept
    dropped_splits: list[str] = field(default_factory=list)  # the splits with a DATA/<split>.dropped.txt
    upright: int = 0  # images stored rotated (EXIF orientation) written upright: re-encoded, not copies
    orientation: list[Problem] = field(default_factory=list)  # warnings about images stored rotated


# A source yields, per record, a SourceImage or the Problem that makes it unusable.
Record = SourceImage | Problem


# ------------------------------------------------------------------ SVHN format 1


def _svhn_values(mat, dataset) -> list[float]:
    """A field of one image's bbox: a 1x1 number for one digit, else references to 1x1 numbers."""
    import h5py

    values = dataset[()]
    if h5py.check_dtype(ref=dataset.dtype) is not None:
        return [float(mat[ref][()].item()) for ref in values.ravel()]
    return [float(v) for v in values.ravel()]


def read_svhn(src: str) -> tuple[int, Iterator[Record]]:
    """The records of ``src/digitStruct.mat`` (MATLAB v7.3), one at a time, with their count."""
    import h5py

    mat_path = os.path.join(src, "digitStruct.mat")
    if not os.path.isfile(mat_path):
        raise ConvertError([Problem(mat_path, "not found: SVHN format 1 keeps digitStruct.mat beside its PNGs")],
                           f"cannot convert {src}")
    try:
        mat = h5py.File(mat_path, "r")
    except OSError as exc:
        raise ConvertError([Problem(mat_path, f"not a MATLAB v7.3 (HDF5) file ({exc})")],
                           f"cannot convert {src}") from None
    group = mat.get("digitStruct")
    shape_problem = None
    if not isinstance(group, h5py.Group) or not {"name", "bbox"} <= set(group.keys()):
        shape_problem = "has no digitStruct group with 'name' and 'bbox' (not SVHN's structure)"
    elif group["name"].shape != group["bbox"].shape or h5py.check_dtype(ref=group["bbox"].dtype) is None:
        shape_problem = "digitStruct 'name' and 'bbox' are not two reference arrays of one length"
    if shape_problem:
        mat.close()
        raise ConvertError([Problem(mat_path, shape_problem)], f"cannot convert {src}")
    names, boxes = group["name"][()].ravel(), group["bbox"][()].ravel()

    def records() -> Iterator[Record]:
        with mat:
            for index in range(len(names)):
                yield _svhn_record(mat, mat_path, src, index, names[index], boxes[index])

    return len(names), records()


def _svhn_record(mat, mat_path: str, src: str, index: int, name_ref, bbox_ref) -> Record:
    where = f"record {index + 1}"
    try:
        name = "".join(chr(int(c)) for c in mat[name_ref][()].ravel())
        where = f"record {index + 1} ({name})"
        bbox = mat[bbox_ref]
        missing = [k for k in SVHN_FIELDS if k not in bbox]
        if missing:
            return Problem(mat_path, f"{where}: bbox lacks {', '.join(missing)} (not SVHN's structure)")
        fields = {k: _svhn_values(mat, bbox[k]) for k in SVHN_FIELDS}
    except (KeyError, ValueError, TypeError, OSError) as exc:
        return Problem(mat_path, f"{where}: unreadable ({type(exc).__name__}: {exc})")
    if len({len(v) for v in fields.values()}) != 1:
        return Problem(mat_path, f"{where}: bbox fields have different lengths")
    image_id = numeric_stem(name)
    if image_id is None:
        return Problem(mat_path, f"{where}: image name is not SVHN's <number>.png")
    digits = []
    for label in fields["label"]:
        if label != int(label) or not 1 <= label <= 10:
            return Problem(mat_path, f"{where}: label {label:g} is outside 1..10 (10 means digit 0)")
        digits.append(int(label) % 10)
    boxes = [(fields["left"][i], fields["top"][i], fields["width"][i], fields["height"][i], digits[i], f"box {i + 1}")
             for i in range(len(digits))]
    return SourceImage(image_id, os.path.join(src, name), boxes, f"digitStruct.mat, {where}")


def write_svhn_mat(path: str, entries: Iterable[tuple[str, list[tuple[float, float, float, float, float]]]]) -> None:
    """Write ``entries`` (file name, [(label, left, top, width, height), ...]) as SVHN's
    digitStruct.mat: MATLAB v7.3 layout, a one-digit image's fields as 1x1 numbers, a multi-digit
    image's as references to 1x1 numbers. For tests and benchmarks without the real download."""
    import h5py
    import numpy as np

    with h5py.File(path, "w", userblock_size=512) as mat:
        refs = mat.create_group("#refs#")
        names, bboxes = [], []
        for index, (name, digits) in enumerate(entries):
            codes = np.array([[ord(c)] for c in name], dtype=np.uint16)
            names.append(refs.create_dataset(f"n{index}", data=codes).ref)
            group = refs.create_group(f"b{index}")
            for column, key in zip((4, 0, 1, 2, 3), SVHN_FIELDS):  # height, label, left, top, width
                values = [float(d[column]) for d in digits]
                if len(values) == 1:
                    group.create_dataset(key, data=np.array([[values[0]]]))
                else:
                    cells = [refs.create_dataset(f"b{index}{key}{k}", data=np.array([[v]])).ref
                             for k, v in enumerate(values)]
                    group.create_dataset(key, data=np.array(cells, dtype=h5py.ref_dtype).reshape(-1, 1))
            bboxes.append(group.ref)
        struct = mat.create_group("digitStruct")
        struct.create_dataset("name", data=np.array(names, dtype=h5py.ref_dtype).reshape(-1, 1))
        struct.create_dataset("bbox", data=np.array(bboxes, dtype=h5py.ref_dtype).reshape(-1, 1))
    with open(path, "r+b") as handle:  # MATLAB's header in the user block
        handle.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: Digit Studio".ljust(116))


# ------------------------------------------------------------------ Pascal VOC and YOLO


def _digit_of(name: str) -> int | None:
    name = name.strip()
    return int(name) if len(name) == 1 and name.isdigit() else None


def _image_ids(paths: list[str]) -> list[int]:
    """File numbers when every name is a distinct number (SVHN, the course), else 1..N in name order."""
    numbers = [numeric_stem(p) for p in paths]
    if None not in numbers and len(set(numbers)) == len(numbers):
        return numbers  # type: ignore[return-value]
    return list(range(1, len(paths) + 1))


def _find_image(folders: Iterable[str], stem: str) -> str | None:
    for folder in folders:
        for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
            path = os.path.join(folder, stem + suffix)
            if os.path.isfile(path):
                return path
    return None


def read_voc(src: str) -> tuple[int, Iterator[Record]]:
    """``src/Annotations/*.xml`` with ``src/JPEGImages/`` (VOC's layout), or XML files beside their images."""
    xml_dir = os.path.join(src, "Annotations") if os.path.isdir(os.path.join(src, "Annotations")) else src
    xmls = sorted(os.path.join(xml_dir, f) for f in os.listdir(xml_dir) if f.lower().endswith(".xml")) \
        if os.path.isdir(xml_dir) else []
    if not xmls:
        raise ConvertError([Problem(src, "no Pascal VOC .xml files (looked in Annotations/ and the folder itself)")],
                           f"cannot convert {src}")
    image_dirs = [os.path.join(src, "JPEGImages"), os.path.join(src, "images"), xml_dir, src]
    ids = _image_ids(xmls)

    def records() -> Iterator[Record]:
        for image_id, xml_path in zip(ids, xmls):
            yield _voc_record(xml_path, image_id, image_dirs)

    return len(xmls), records()


def _voc_record(xml_path: str, image_id: int, image_dirs: list[str]) -> Record:
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        return Problem(xml_path, f"not readable XML ({exc})")
    file_name = (root.findtext("filename") or "").strip()
    stem = os.path.splitext(file_name)[0] if file_name else os.path.splitext(os.path.basename(xml_path))[0]
    path = next((os.path.join(d, file_name) for d in image_dirs
                 if file_name and os.path.isfile(os.path.join(d, file_name))),
                None) or _find_image(image_dirs, stem)
    if path is None:
        return Problem(xml_path, f"its image {file_name or stem} is missing")
    boxes = []
    for number, obj in enumerate(root.iter("object"), start=1):
        name = obj.findtext("name") or ""
        digit = _digit_of(name)
        if digit is None:
            return Problem(xml_path, f"object {number}: class {name.strip()!r} is not a digit 0-9")
        try:
            bndbox = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (float(bndbox.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            return Problem(xml_path, f"object {number}: bndbox needs numeric xmin, ymin, xmax, ymax")
        # VOC counts pixels from 1 and includes xmax: pixel i spans [i - 1, i).
        boxes.append((xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1, digit, f"object {number}"))
    try:
        upright, warning = _voc_frame(_voc_size(root), *image_frame(path))
    except OSError as exc:
        return Problem(xml_path, f"its image {os.path.basename(path)} is unreadable ({exc})")
    return SourceImage(image_id, path, boxes, os.path.basename(xml_path), upright, warning)


def _voc_size(root: ElementTree.Element) -> tuple[int, int] | None:
    try:
        size = (int(float(root.findtext("size/width") or "")), int(float(root.findtext("size/height") or "")))
    except (ValueError, OverflowError):  # absent, text, nan or inf
        return None
    return size if min(size) > 0 else None


def _voc_frame(declared: tuple[int, int] | None, stored: tuple[int, int], orientation: int) -> tuple[bool, str]:
    """Whether the boxes of an image with this ``stored`` size and EXIF ``orientation`` refer to the upright
    picture, and what to warn about: the XML's ``<size>`` (``declared``) is the frame its tool drew in."""
    if orientation == 1:
        return False, ""
    upright = _turned(stored, orientation)
    frames = (f"EXIF orientation {orientation}: stored {stored[0]}x{stored[1]}, "
              f"shown {upright[0]}x{upright[1]}")
    if declared == upright and declared != stored:
        return True, ""
    if declared == stored and declared != upright:
        return False, (f"viewers show it rotated ({frames}) while its <size> says its boxes refer to the stored "
                       f"pixels: kept as stored; if they were drawn on the picture as shown, set <size> to "
                       f"{upright[0]}x{upright[1]} and convert again")
    why = ("it has no usable <size>" if declared is None else f"its <size> {declared[0]}x{declared[1]} "
           + ("fits both" if declared == stored else "fits neither"))
    return True, (f"stored rotated ({frames}) and {why}: assumed its boxes were drawn on the picture as shown, "
                  "as labelling tools show it, and wrote it upright; check its boxes")


def _yolo_names(src: str) -> list[int] | None:
    """Class index -> digit from ``classes.txt`` (one name per line); None: class k is digit k."""
    path = os.path.join(src, "classes.txt")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        names = [line.strip() for line in handle if line.strip()]
    digits = [_digit_of(n) for n in names]
    bad = [f"{i}: {n!r}" for i, (n, d) in enumerate(zip(names, digits)) if d is None]
    if bad:
        raise ConvertError([Problem(path, f"class {b} is not a digit 0-9") for b in bad], f"cannot convert {src}")
    return digits  # type: ignore[return-value]


def read_yolo(src: str, subset: str | None = None) -> tuple[int, Iterator[Record]]:
    """``src/images/**`` with ``src/labels/**.txt`` (Ultralytics' layout); an image without a label file has
    no digits. Ultralytics keeps its splits as ``images/<subset>/``: ``subset`` picks one."""
    image_root, label_root = os.path.join(src, "images"), os.path.join(src, "labels")
    if not os.path.isdir(image_root) or not os.path.isdir(label_root):
        raise ConvertError([Problem(src, f"YOLO layout needs images/ and labels/ folders in {src}")],
                           f"cannot convert {src}")
    subsets = sorted(d for d in os.listdir(image_root) if os.path.isdir(os.path.join(image_root, d)))
    if subset is not None:
        if subset not in subsets:
            raise ConvertError([Problem(image_root, f"has no subfolder {subset!r} "
                                                    f"(it has: {', '.join(subsets) or 'none'})")],
                               f"cannot convert {src}")
        image_root, label_root = os.path.join(image_root, subset), os.path.join(label_root, subset)
    elif len(subsets) > 1:
        raise ConvertError([Problem(image_root, f"holds {len(subsets)} subfolders ({', '.join(subsets)}), "
                                                "Ultralytics' splits: convert one at a time with --subset NAME")],
                           f"cannot convert {src}")
    images = sorted(os.path.join(d, f) for d, _, files in os.walk(image_root) for f in files
                    if f.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise ConvertError([Problem(image_root, f"no images in {image_root}")], f"cannot convert {src}")
    names = _yolo_names(src)
    ids = _image_ids(images)
    stems = {os.path.splitext(os.path.relpath(p, image_root))[0] for p in images}
    orphans = sorted(os.path.relpath(os.path.join(d, f), src) for d, _, files in os.walk(label_root) for f in files
                     if f.endswith(".txt") and os.path.splitext(os.path.relpath(os.path.join(d, f), label_root))[0]
                     not in stems)

    def records() -> Iterator[Record]:
        for image_id, path in zip(ids, images):
            relative = os.path.splitext(os.path.relpath(path, image_root))[0] + ".txt"
            yield _yolo_record(path, os.path.join(label_root, relative), image_id, names, src)
        for orphan in orphans:  # labelled digits whose image is gone: never dropped silently
            yield Problem(src, f"{orphan} labels an image that is missing from images/")

    return len(images) + len(orphans), records()


def _yolo_record(path: str, label_path: str, image_id: int, names: list[int] | None, src: str) -> Record:
    try:
        stored, orientation = image_frame(path)
    except OSError as exc:
        return Problem(src, f"{os.path.relpath(path, src)}: unreadable image ({exc})")
    # Ultralytics and labelling tools normalise to the picture as its EXIF orientation turns it.
    width, height = _turned(stored, orientation)
    boxes = []
    if os.path.isfile(label_path):
        with open(label_path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        for number, line in enumerate(lines, start=1):
            values = line.split()
            if not values:
                continue
            where = f"{os.path.relpath(label_path, src)}, line {number}"
            if len(values) != 5:
                return Problem(src, f"{where}: {len(values)} values; YOLO wants 5 (class cx cy w h)")
            try:
                cls, cx, cy, w, h = int(values[0]), *(float(v) for v in values[1:])
            except ValueError:
                return Problem(src, f"{where}: not numbers: {line.strip()!r}")
            digit = ((names[cls] if 0 <= cls < len(names) else None) if names is not None
                     else (cls if 0 <= cls <= 9 else None))
            if digit is None:
                return Problem(src, f"{where}: class {cls} is not a digit class "
                                           f"({'see classes.txt' if names is not None else 'expected 0..9'})")
            if not all(0.0 <= v <= 1.0 for v in (cx, cy)) or w <= 0 or h <= 0:
                return Problem(src, f"{where}: cx cy w h must be normalised to 0..1")
            boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height, digit, f"line {number}"))
    return SourceImage(image_id, path, boxes, os.path.relpath(label_path, src), upright=True)


READERS: dict[str, Callable[..., tuple[int, Iterator[Record]]]] = {
    "svhn": read_svhn, "voc": read_voc, "yolo": read_yolo}


# ------------------------------------------------------------------ writing the course layout


def _turned(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The size viewers show an image of this stored ``size`` at: orientations 5-8 swap its sides."""
    return (size[1], size[0]) if orientation >= 5 else size


class _CocoSpool:
    """A COCO file written as it goes: images and annotations spool to two files, joined at the end."""

    def __init__(self, folder: str, split: str):
        self.split, self.folder = split, folder
        self.json_path = os.path.join(folder, f"{split}.json")
        self.image_dir = os.path.join(folder, split)
        os.makedirs(self.image_dir)
        self._images = tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder)
        self._annotations = tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder)
        self._sources = open(os.path.join(folder, f"{split}.sources.csv"), "w", newline="", encoding="utf-8")
        self._source_rows = csv.writer(self._sources)
        self._source_rows.writerow(["image_id", "source"])
        self._dropped = None
        self.images = self.annotations = self.dropped = 0

    def add(self, image_id: int, file_name: str, size: tuple[int, int], boxes: list[list[float]],
            source: str) -> None:
        self._images.write(("," if self.images else "") + json.dumps(
            {"id": image_id, "file_name": file_name, "width": size[0], "height": size[1]}))
        self.images += 1
        for x, y, w, h, digit in boxes:
            self.annotations += 1
            self._annotations.write(("," if self.annotations > 1 else "") + json.dumps(
                {"id": self.annotations, "image_id": image_id, "category_id": int(digit) + 1,
                 "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)], "area": round(w * h, 2), "iscrowd": 0}))
        self._source_rows.writerow([image_id, source])

    def drop(self, problem: Problem) -> None:
        """Lists a record left out of the split: the summary shows the first few, this file every one."""
        if self._dropped is None:
            self._dropped = open(os.path.join(self.folder, self.split + DROPPED_SUFFIX), "w", encoding="utf-8")
        self._dropped.write(f"{problem}\n")
        self.dropped += 1

    def finish(self, description: str) -> None:
        with open(self.json_path, "w", encoding="utf-8") as out:
            out.write(json.dumps({"info": {"description": description}, "licenses": [],
                                  "categories": categories()})[:-1])
            for key, spool in (("images", self._images), ("annotations", self._annotations)):
                out.write(f', "{key}": [')
                spool.seek(0)
                shutil.copyfileobj(spool, out)
                out.write("]")
            out.write("}\n")
        self.close()

    def close(self) -> None:
        for handle in (self._images, self._annotations, self._sources, self._dropped):
            if handle is not None:
                handle.close()


def _clip(box: tuple[float, float, float, float, int, str], size: tuple[int, int]) -> list[float] | None:
    """``box`` ``(x, y, w, h, digit, place)`` clipped to the image, as x, y, w, h, digit."""
    corners = clip_box(*box[:4], *size)
    if corners is None:
        return None
    x0, y0, x1, y1 = corners
    return [x0, y0, x1 - x0, y1 - y0, box[4]]


def _place_image(source: str, target: str, link: bool) -> None:
    if link:
        try:
            os.link(source, target)
            return
        except OSError as exc:
            raise ConvertError([Problem(source, f"cannot hard-link into {os.path.dirname(target)} ({exc.strerror}); "
                                                "drop --link to copy instead")], "conversion stopped") from None
    shutil.copyfile(source, target)


def _write_upright(source: str, target: str) -> None:
    """``source`` turned as its EXIF orientation says, in its own format and without the tag, so that every
    reader, ours included, sees the picture its labels were drawn on."""
    with Image.open(source) as image:
        kind = "JPEG" if image.format == "MPO" else image.format  # a phone's MPO is a JPEG with extra frames
        upright = ImageOps.exif_transpose(image)
        options = {"quality": 95} if kind in LOSSY_FORMATS else {}
        if image.info.get("icc_profile"):
            options["icc_profile"] = image.info["icc_profile"]
        upright.save(target, kind, exif=upright.getexif(), **options)


def _check_out(out: str, splits: list[str], force: bool) -> None:
    taken = [name for split in splits for name in (split, f"{split}.json") if os.path.exists(os.path.join(out, name))]
    if taken and not force:
        raise ConvertError([Problem(out, f"already holds {', '.join(taken)}")],
                           f"refusing to overwrite {out}: pass --force to replace those splits")


def _commit(work: str, out: str, splits: list[str]) -> None:
    """Move finished splits into place: the old annotation file goes first and the new one comes
    last, so a split never looks complete while its images are being swapped."""
    for split in splits:
        files = (f"{split}.sources.csv", split + DROPPED_SUFFIX, f"{split}.json")
        for name in files:
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        if os.path.isdir(os.path.join(out, split)):
            shutil.rmtree(os.path.join(out, split))
        os.replace(os.path.join(work, split), os.path.join(out, split))
        for name in files:  # a split without dropped records has no list of them
            if os.path.exists(os.path.join(work, name)):
                os.replace(os.path.join(work, name), os.path.join(out, name))


def convert(kind: str, src: str, out: str, split: str = "train", valid_fraction: float = 0.0, seed: int = 0,
            link: bool = False, force: bool = False, skip_invalid: bool = False, subset: str | None = None,
            progress_stream=sys.stderr) -> Report:
    """Convert ``src`` (a ``kind`` of READERS) into ``out`` in the course layout; see the module doc."""
    if kind not in READERS:
        raise ConvertError([Problem(src, f"unknown format {kind!r}; choose {', '.join(READERS)}")], "cannot convert")
    if not 0.0 <= valid_fraction < 1.0:
        raise ConvertError([Problem("--valid-fraction", f"{valid_fraction:g} must be in [0, 1)")], "cannot convert")
    if valid_fraction and split != "train":
        raise ConvertError([Problem("--valid-fraction", f"carves valid/ out of the training images, not out of "
                                                        f"--split {split}")], "cannot convert")
    if not os.path.isdir(src):
        why = (f"--src {src} is a file; pass the folder that holds it: --src {os.path.dirname(src) or '.'}"
               if os.path.exists(src) else "folder not found")
        raise ConvertError([Problem(src, why)], f"cannot convert {os.path.abspath(src)}")
    try:
        check_output_dir(out, "--out")
    except ValueError as exc:
        raise ConvertError([Problem(out, str(exc))], "cannot convert") from None
    if os.path.isdir(out) and os.path.samefile(out, src):
        raise ConvertError([Problem(out, "--out is the --src folder: write the dataset into a folder of its own")],
                           "cannot convert")
    splits = [split] + (["valid"] if valid_fraction else [])
    _check_out(out, splits, force)
    count, records = READERS[kind](src, **({"subset": subset} if kind == "yolo" else {}))
    created = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    # The same seed carves out the same images (the course: 3,340 of SVHN's 33,402 train images).
    to_valid = set(random.Random(seed).sample(range(count), round(valid_fraction * count))) if valid_fraction else set()
    work = tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=out)
    try:
        report = _write(records, count, to_valid, splits, work, link, progress_stream, f"{kind} import of {src}")
        problems = report.dropped
        if problems and not skip_invalid:
            raise ConvertError(problems, f"{src}: {len(problems)} invalid record(s); nothing was written "
                                         f"(--skip-invalid converts the rest)")
        _commit(work, out, splits)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created and not os.listdir(out):  # a failed first run leaves no empty folder behind
            os.rmdir(out)
    return report


def _write(records: Iterator[Record], count: int, to_valid: set[int], splits: list[str], work: str, link: bool,
           progress_stream, description: str) -> Report:
    spools = {name: _CocoSpool(work, name) for name in splits}
    report = Report()
    bar = ProgressBar(count, "convert", stream=progress_stream)
    try:
        for index, record in enumerate(records):
            bar.update(index + 1)
            spool = spools["valid" if index in to_valid else splits[0]]
            problem = record if isinstance(record, Problem) else _add_record(record, spool, link, report)
            if problem is not None:
                report.dropped.append(problem)
                spool.drop(problem)
        for spool in spools.values():
            spool.finish(description)
    finally:
        for spool in spools.values():
            spool.close()
    report.dropped_splits = [name for name, spool in spools.items() if spool.dropped]
    return report


def _add_record(record: SourceImage, spool: _CocoSpool, link: bool, report: Report) -> Problem | None:
    """Writes one image and its boxes into ``spool``; or the Problem that drops the record."""
    if not os.path.isfile(record.path):
        return Problem(os.path.dirname(record.path),
                       f"{record.where}: image {os.path.basename(record.path)} is missing")
    try:
        size, orientation = image_frame(record.path)
    except OSError as exc:
        return Problem(record.path, f"unreadable image ({exc})")
    file_name = f"{record.image_id}{os.path.splitext(record.path)[1].lower()}"
    target = os.path.join(spool.image_dir, file_name)
    if os.path.exists(target):
        return Problem(record.path, f"{record.where}: image id {record.image_id} is used twice")
    if record.upright and orientation != 1:
        try:
            _write_upright(record.path, target)
        except (OSError, ValueError, KeyError) as exc:
            return Problem(record.path, f"{record.where}: stored rotated (EXIF orientation {orientation}) and cannot "
                                        f"be written upright ({type(exc).__name__}: {exc}); save it upright yourself")
        size = _turned(size, orientation)
        report.upright += 1
    else:
        _place_image(record.path, target, link)
    if record.warning:
        report.orientation.append(Problem(record.path, f"{record.where}: {record.warning}"))
    boxes = _clipped_boxes(record, size, report)
    spool.add(record.image_id, file_name, size, boxes, os.path.abspath(record.path))
    report.images[spool.split] = report.images.get(spool.split, 0) + 1
    report.digits[spool.split] = report.digits.get(spool.split, 0) + len(boxes)
    return None


def _clipped_boxes(record: SourceImage, size: tuple[int, int], report: Report) -> list[list[float]]:
    """The record's boxes clipped to its ``size`` image; those left with no area are dropped. Both are reported
    by their place in the source and their digit ("line 3 (digit 8)"): a bare number reads as the digit."""
    boxes, image = [], f"{size[0]}x{size[1]}"
    for box in record.boxes:
        where = f"{record.where}: {box[5]} (digit {box[4]})"
        clipped = _clip(box, size)
        if clipped is None:
            report.empty_boxes.append(Problem(record.path, f"{where} has no area inside the {image} image"))
            continue
        overhang = max(-box[0], -box[1], box[0] + box[2] - size[0], box[1] + box[3] - size[1])
        if overhang > 1:
            report.clipped.append(Problem(record.path, f"{where} ran {overhang:g} px past the {image} image"))
        boxes.append(clipped)
    return boxes


def clear_partials(out: str) -> int:
    """Remove what interrupted runs left in ``out`` (hidden folders; never a split)."""
    stale = [d for d in os.listdir(out) if d.startswith(PARTIAL_PREFIX)] if os.path.isdir(out) else []
    for name in stale:
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    return len(stale)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _listed(problems: list[Problem]) -> list[str]:
    return [f"  {line}" for line in listed(problems)]


def _summary(report: Report, out: str) -> list[str]:
    lines = [f"{split}: {_plural(report.images.get(split, 0), 'image')}, "
             f"{_plural(report.digits.get(split, 0), 'digit')} -> {os.path.join(out, split)}/ and {split}.json"
             for split in report.images]
    if report.dropped:
        every = " and ".join(os.path.join(out, split + DROPPED_SUFFIX) for split in report.dropped_splits)
        lines += [f"dropped {_plural(len(report.dropped), 'invalid record')} (all of them listed in {every}):"] \
            + _listed(report.dropped)
    if report.upright:
        lines.append(f"{_plural(report.upright, 'image')} stored rotated (EXIF orientation) "
                     + ("was written upright, as its labels see it" if report.upright == 1
                        else "were written upright, as their labels see them")
                     + " (re-encoded: neither copies nor links of their source files)")
    if report.orientation:
        lines += [f"{_plural(len(report.orientation), 'image')} stored rotated (EXIF orientation) to check:"] \
            + _listed(report.orientation)
    if report.empty_boxes:
        lines += [f"dropped {_plural(len(report.empty_boxes), 'box')} with no area inside the image:"] \
            + _listed(report.empty_boxes)
    if report.clipped:
        lines += [f"clipped {_plural(len(report.clipped), 'box')} running past the image (usual in SVHN; "
                  f"in hand-made labels, check them):"] + _listed(report.clipped)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=sorted(READERS), help="svhn: format 1 (digitStruct.mat); voc; yolo")
    parser.add_argument("--src", required=True, help="the source folder (SVHN: the one holding digitStruct.mat)")
    parser.add_argument("--out", required=True, help="the dataset folder to write (course layout)")
    parser.add_argument("--split", default="train", choices=["train", "valid", "test"])
    parser.add_argument("--valid-fraction", type=float, default=0.0,
                        help="carve this fraction of the images into valid/ (reproducible with --seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--link", action="store_true", help="hard-link images instead of copying them")
    parser.add_argument("--force", action="store_true", help="replace splits that --out already holds")
    parser.add_argument("--skip-invalid", action="store_true", help="convert the valid records, report the rest")
    parser.add_argument("--subset", default=None,
                        help="yolo: which images/<subset>/ folder to convert (Ultralytics keeps train/ and val/ there)")
    args = parser.parse_args(argv)
    if clear_partials(args.out):
        print(f"removed what an interrupted conversion left in {args.out}", file=sys.stderr)
    try:
        report = convert(args.format, args.src, args.out, args.split, args.valid_fraction, args.seed,
                         args.link, args.force, args.skip_invalid, args.subset)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(_summary(report, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
