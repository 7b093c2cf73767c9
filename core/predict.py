"""Inference: load a checkpoint, detect digits, write Task 1 (COCO json) and Task 2 (csv).

``python -m core.predict --ckpt FILE --images DIR --out OUT_DIR`` writes
``OUT_DIR/pred.json`` (every detection: mAP rewards low-score ones) and
``OUT_DIR/pred.csv`` (``image_id,pred_label``: the number read left to right, ``-1``
when no digit is read). The app calls the same :func:`load_model` and :func:`detect`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou
from torchvision.transforms.v2 import functional as F

from core.checkpoint import CheckpointError, describe, load_checkpoint
from core.images import ImageDecodeError, decode_image, list_images, numeric_stem
from core.model import (LETTER_LABEL, MAX_INPUT_SIDE, InputSize, ModelError, RefinePolicy, closer_look_of,
                        crop_views_of, input_size_of, line_heights_of, prepare_for_inference, rebuild_model,
                        refine_policy_of, resize_by, view_fuse_iou_of, view_photos_of, view_scales_of)
from core.outputs import check_output_dir

DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints",
                                  "default.pt")
TASK2_THRESHOLD = 0.5
DUPLICATE_IOU = 0.45  # two boxes overlapping this much are one digit read twice
DUPLICATE_COVER = 0.8  # or one box mostly inside another
BORDER_PX = 0.5  # a box this close to the image's edge is cut by it


@dataclass
class LoadedModel:
    model: torch.nn.Module
    meta: dict[str, Any]
    device: torch.device
    path: str

    @property
    def reader(self) -> NumberReader:
        """How this checkpoint reads a Task 2 number (validated by :func:`load_model`)."""
        return NumberReader.from_meta(self.meta)

    def photo_size(self) -> str:
        """Which images this model reads as photos (those its own input-size policy reduces), in words."""
        policy = input_size_of(self.model)
        return f"a short side over {policy.max_short} px or a long side over {policy.max_long} px"

    def inference_note(self, input_size: int | str | None = None) -> str:
        """How this model reads an image, in words (input size policy, views, second pass, closer look)."""
        refine = refine_policy_of(self.model)
        note = f"{input_size_of(self.model, input_size).describe()}; {refine.describe()}"
        views = view_scales_of(self.model)
        if len(views) > 1:
            kept = "the read that is kept (that crop, or else the whole image)" if refine.below_px > 0 else "each image"
            note += f"; {kept} is read at {_sizes_in_words(views)} that size and fused box by box"
            if refine.below_px > 0 and crop_views_of(self.model) == "batched":
                note += " (a crop's sizes in one batch, padded to the largest)"
            if view_photos_of(self.model) == "confirm":
                note += ("; a photo that size reduces whose surest digit stands alone is located and read whole at "
                         "each view, then fused")
        closer = closer_look_of(self.model)
        if closer and input_size in (None, "auto"):
            note += f"; {closer.describe()}"
        if line_heights_of(self.model) == "shared":
            note += "; the digits of the number read share one box height, as SVHN boxes a number"
        return note


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but PyTorch sees no CUDA GPU")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def load_model(path: str | None = None, device: str | torch.device = "auto") -> LoadedModel:
    """Rebuild the model a checkpoint describes, from the checkpoint alone."""
    path = path or DEFAULT_CHECKPOINT
    payload = load_checkpoint(path)
    try:
        NumberReader.from_meta(payload)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    try:
        model = rebuild_model(payload["model_kwargs"])
    except (ModelError, TypeError, KeyError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild architecture {payload.get('arch')!r}: {exc}") from None
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        first = str(exc).split("\n")[0:3]
        raise CheckpointError(
            f"{path}: the weights do not fit architecture {payload.get('arch')!r} "
            f"(a checkpoint of another architecture or a damaged file): {' '.join(first)[:300]}") from None
    device = device if isinstance(device, torch.device) else pick_device(device)
    return LoadedModel(prepare_for_inference(model.to(device)), describe(payload), device, path)


def _to_tensor(image: Image.Image | torch.Tensor) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image if image.is_floating_point() else F.to_dtype(image, torch.float32, scale=True)
    return F.to_dtype(F.pil_to_tensor(image.convert("RGB")), torch.float32, scale=True)


def parse_input_size(text: str | int | None) -> int | str | None:
    """``None`` (the checkpoint's policy), ``"auto"``, or a short side in pixels, from a CLI or form value."""
    if text is None or text == "" or text == "auto":
        return text or None
    try:
        size = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"input size {text!r} must be 'auto' or a whole number of pixels") from None
    if not 16 <= size <= MAX_INPUT_SIDE:
        raise ValueError(f"input size {size} must be between 16 and {MAX_INPUT_SIDE} px")
    return size


# A fixed input size this much above what auto gives an image makes a number that fills it larger than the digits the
# model learned (up to about 110 px tall): a close-up crop then reads worse, not better.
ENLARGED_PAST_AUTO = 1.25


def enlarged_past_auto(loaded: LoadedModel, size: tuple[int, int], input_size: int | str | None) -> float:
    """How many times larger a fixed ``input_size`` makes an image of ``size`` (width, height) than the
    checkpoint's own policy ("auto") does (1.0 for auto)."""
    if input_size in (None, "auto"):
        return 1.0
    width, height = size
    return (input_size_of(loaded.model, input_size).scale(height, width)
            / input_size_of(loaded.model, "auto").scale(height, width))


@torch.inference_mode()
def detect(loaded: LoadedModel | torch.nn.Module, images: Sequence[Image.Image | torch.Tensor],
           batch_size: int = 8, device: torch.device | None = None,
           input_size: int | str | None = None) -> list[dict[str, Any]]:
    """Detections per image: ``boxes`` (xyxy, original pixels), ``scores``, ``digits`` (0..9) and
    ``region``, the box around the number read (None when no digit locates one); ``read_again``, where
    present, says in words why and how the image was read a second time (a photo's lone digit confirmed,
    a closer look) and what it changed.

    Pass 1 sees each image by the model's input size policy (or ``input_size``: "auto" or a short
    side in pixels). Pass 2, when the model's refine policy asks for it, reads a number whose
    digits were small at that size again from a crop of its region, at the size the model reads
    best; its detections replace pass 1's inside the crop. A model with several views reads that
    crop (or, where none is cut, the whole image) at each of them and fuses what they find
    (:func:`fuse_views`). ``photo`` says whether the model's own input-size policy reduces the image (a
    :class:`NumberReader` may read photos with scores of their own). With the checkpoint's own input size, a
    model with a closer look (``core.model.CloserLook``) reads a large photo in which those passes
    found no sure digit again at a larger size. A model whose ``line_heights`` is "shared" draws the
    digits of the number read at one height (:func:`share_line_height`). All are recorded in the
    checkpoint's model kwargs, so core.predict, core.evaluate and the app read an image the same way.
    """
    model = loaded.model if isinstance(loaded, LoadedModel) else loaded
    device = device or (loaded.device if isinstance(loaded, LoadedModel) else next(model.parameters()).device)
    policy = input_size_of(model, input_size)
    tensors = [_to_tensor(im) for im in images]
    results = _read(model, tensors, policy, batch_size, device, refine_policy_of(model))
    if input_size in (None, "auto"):  # a size asked for is the size read at
        _look_closer(model, tensors, results, policy, batch_size, device)
    if line_heights_of(model) == "shared":
        results = [share_line_height(found, tensor.shape[-2]) for tensor, found in zip(tensors, results)]
    own = input_size_of(model)  # whatever size was asked, a photo is what the model's own policy reduces
    return [{**found, "photo": own.scale(*tensor.shape[-2:]) < 1.0} for tensor, found in zip(tensors, results)]


def share_line_height(detection: dict[str, Any], image_height: float) -> dict[str, Any]:
    """``detection`` with the boxes of its number (the line of digits around the surest one, each scoring
    >= 0.5) at their median height: SVHN's annotators gave every digit of a number the same box height
    (all 1,560 digit pairs of the dev set), which a model that boxes each digit on its own misses by a
    little each time. A box keeps its vertical centre; one the image's top or bottom edge cuts is not
    measured and keeps the edge it does see, as SVHN's boxes run past the border and are clipped. The
    line is found with a fixed reader, so the boxes do not depend on the Task 2 reader they are later
    read with."""
    line = read_digits(detection, NumberReader(TASK2_THRESHOLD, TASK2_THRESHOLD))
    boxes = [list(box) for box in detection["boxes"]]
    cut_top = {i for i in line if boxes[i][1] <= BORDER_PX}
    cut_bottom = {i for i in line if boxes[i][3] >= image_height - BORDER_PX}
    whole = [i for i in line if i not in cut_top and i not in cut_bottom]
    if len(line) < 2 or not whole:
        return detection
    height = statistics.median(boxes[i][3] - boxes[i][1] for i in whole)
    for i in line:
        if i in cut_top and i in cut_bottom:
            continue
        y0, y1 = boxes[i][1], boxes[i][3]
        if i in cut_top:
            y0 = y1 - height
        elif i in cut_bottom:
            y1 = y0 + height
        else:
            y0, y1 = (y0 + y1 - height) / 2, (y0 + y1 + height) / 2
        boxes[i][1], boxes[i][3] = max(0.0, y0), min(float(image_height), y1)
    return {**detection, "boxes": boxes}


def _look_closer(model: torch.nn.Module, tensors: Sequence[torch.Tensor], results: list[dict[str, Any]],
                 first: InputSize, batch_size: int, device: torch.device) -> None:
    closer = closer_look_of(model)
    if closer is None:
        return
    todo = [i for i, (tensor, found) in enumerate(zip(tensors, results))
            if max(found["scores"], default=0.0) < closer.trigger and closer.worth_it(first, *tensor.shape[-2:])]
    if not todo:
        return
    picked = [tensors[i] for i in todo]
    size = closer.input_size(first)
    again = _read(model, picked, size, batch_size, device, closer.refine_policy(refine_policy_of(model)))
    for index, found in zip(todo, again):
        if closer.keeps(found, first.scale(*tensors[index].shape[-2:])):
            best = max(results[index]["scores"], default=0.0)
            note = (f"no digit scored {closer.trigger:g} at first (best {best:.2f}), so it was looked at again, "
                    f"closer (long side up to {closer.max_long} px)")
            if found.get("read_again"):  # the closer reading confirmed a lone digit too
                note += f"; there, {found['read_again']}"
            results[index] = {**found, "read_again": note}


def _read(model: torch.nn.Module, tensors: Sequence[torch.Tensor], policy: InputSize, batch_size: int,
          device: torch.device, refine: RefinePolicy) -> list[dict[str, Any]]:
    """Each image read by the model's views, located once (:func:`_read_located_once`; ``refine``: how its
    second pass reads a small number's crop). When the model's
    ``view_photos`` is "confirm", an image ``policy`` reduces (a photo) whose surest digit stands alone is read
    again whole at every view (:func:`_read_whole_at_each_view`), and that reading is kept unless it is surer
    (:func:`confirmed`): most walls read as a number are one ring or letter read as a digit that only one view
    locates."""
    views = view_scales_of(model)
    results = _read_located_once(model, tensors, policy, batch_size, device, views, refine)
    if len(views) == 1 or view_photos_of(model) != "confirm":
        return results
    lone = [i for i, (tensor, found) in enumerate(zip(tensors, results))
            if policy.scale(*tensor.shape[-2:]) < 1.0 and len(read_digits(found, NumberReader.lone_check())) == 1]
    if lone:
        again = _read_whole_at_each_view(model, [tensors[i] for i in lone], policy, batch_size, device, views,
                                         refine)
        for i, found in zip(lone, again):
            first = results[i]
            results[i] = confirmed(first, found)
            results[i]["read_again"] = _confirmation_note(views, first, results[i])
    return results


def _sizes_in_words(views: Sequence[float]) -> str:
    return ', '.join(f'{v:g}x' for v in sorted(views))


def _confirmation_note(views: Sequence[float], first: dict[str, Any], kept: dict[str, Any]) -> str:
    done = f"its lone digit was read again, whole, at {_sizes_in_words(views)} to confirm it"
    best, now = max(first["scores"], default=0.0), max(kept["scores"], default=0.0)
    if now >= best:  # the first reading kept, or the sizes' fused score as high
        return f"{done}: the sizes agree (best score {best:.2f})"
    return f"{done}: the sizes are less sure (best score {best:.2f} -> {now:.2f})"


def confirmed(first: dict[str, Any], again: dict[str, Any]) -> dict[str, Any]:
    """The reading kept after a photo's lone digit was read again at every view: the new one, unless it is
    surer than the first. A confirmation may take confidence away, never add it: a ring the first reading
    scored 0.6 (read as nothing) that two other sizes see clearly must not become a "0"."""
    return first if max(again["scores"], default=0.0) > max(first["scores"], default=0.0) else again


def _read_located_once(model: torch.nn.Module, tensors: Sequence[torch.Tensor], policy: InputSize, batch_size: int,
                       device: torch.device, views: Sequence[float], refine: RefinePolicy) -> list[dict[str, Any]]:
    """Pass 1 locates each number at ``policy``'s size, once; the read that is kept sees every one of
    ``views``: pass 2's crop of a small number, or else the whole image again at the other view scales,
    fused with pass 1. Locating at every view as well would cost two more reads of each image for no
    better number (README "Reading at several sizes")."""
    results = _detect_at(model, tensors, policy, batch_size, device)
    cropped = _read_small_numbers_again(model, tensors, results, policy, batch_size, device, refine, views)
    others = [v for v in views if v != 1.0]
    rest = [i for i in range(len(tensors)) if i not in cropped]
    if not others or not rest:
        return results
    per_view = [_detect_view(model, [tensors[i] for i in rest], policy, v, batch_size, device) for v in others]
    for k, i in enumerate(rest):
        results[i] = _fused(model, [results[i]] + [found[k] for found in per_view], refine)
    return results


def _read_whole_at_each_view(model: torch.nn.Module, tensors: Sequence[torch.Tensor], policy: InputSize,
                             batch_size: int, device: torch.device, views: Sequence[float],
                             refine: RefinePolicy) -> list[dict[str, Any]]:
    """Every view makes the whole reading, pass 1 at that multiple of ``policy``'s size and pass 2 at that
    multiple of the crop's, and the views' results are fused: a ring or a letter that one view locates
    and reads close up as a digit is seldom located at the other sizes, so it keeps a third of its score.
    Only lone digits are read so: made for every photo, it loses plates whose small digits the smallest
    view cannot locate (README "Confirming a lone digit in a photo")."""
    per_view = []
    for view in views:
        found = _detect_view(model, tensors, policy, view, batch_size, device)
        _read_small_numbers_again(model, tensors, found, policy, batch_size, device, refine, (view,),
                                  located_at=view)
        per_view.append(found)
    return [_fused(model, list(found), refine) for found in zip(*per_view)]


def _fused(model: torch.nn.Module, views: list[dict[str, Any]], refine: RefinePolicy) -> dict[str, Any]:
    """One image's views fused, with the number region of the result."""
    fused = fuse_views(views, view_fuse_iou_of(model))
    region = number_region(fused, refine.min_score)
    return {**fused, "region": region[0] if region else None}


def _detect_at(model: torch.nn.Module, tensors: Sequence[torch.Tensor], policy: InputSize, batch_size: int,
               device: torch.device, views: Sequence[float] = (1.0,)) -> list[dict[str, Any]]:
    """One pass: each image read at each of ``views`` (multiples of ``policy``'s size), what the
    views find fused. A model whose ``crop_views`` is "batched" reads one image's views in one batch."""
    if len(views) > 1 and crop_views_of(model) == "batched":
        per_image = _detect_views_together(model, tensors, policy, views, batch_size, device)
    else:
        found = [_detect_view(model, tensors, policy, view, batch_size, device) for view in views]
        if len(views) == 1:
            return found[0]
        per_image = list(zip(*found))
    return [fuse_views(image_views, view_fuse_iou_of(model)) for image_views in per_image]


def _detect_views_together(model: torch.nn.Module, tensors: Sequence[torch.Tensor], policy: InputSize,
                           views: Sequence[float], batch_size: int,
                           device: torch.device) -> list[list[dict[str, list]]]:
    """Each image at each of ``views``, its views in one batch (``core.model.CROP_VIEWS``). The batch is padded to
    the largest view's size, so only images whose largest views pad to the same size share one: what an image
    reads never depends on what it was read with. ``batch_size`` counts images at one view, as elsewhere."""
    results: list[list[dict[str, list]]] = [[] for _ in tensors]
    with _in_eval_mode(model):
        for chunk in _same_padded_size(model, tensors, policy, max(views), max(1, batch_size // len(views))):
            resized = [[resize_by(tensors[i], policy.scale(*tensors[i].shape[-2:], view)) for view in views]
                       for i in chunk]
            outputs = iter(model([r.to(device) for sizes in resized for r in sizes]))
            for i, sizes in zip(chunk, resized):
                results[i] = [_in_image_pixels(tensors[i], r, next(outputs)) for r in sizes]
    return results


def _same_padded_size(model: torch.nn.Module, tensors: Sequence[torch.Tensor], policy: InputSize, view: float,
                      batch_size: int) -> Iterator[list[int]]:
    """Indices of ``tensors`` in batches of at most ``batch_size`` that the model sees at one padded size at
    ``view``: padding an image up to a larger neighbour changes its features near the border, and with them
    its scores, so an image's detections would depend on what it was uploaded with."""
    divisible = getattr(getattr(model, "transform", None), "size_divisible", 32)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault(policy.padded_size(*tensor.shape[-2:], divisible, view), []).append(index)
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            yield members[start:start + batch_size]


@contextlib.contextmanager
def _in_eval_mode(model: torch.nn.Module):
    was_training = model.training
    if was_training:  # switching walks every submodule (a few percent of a dev image when done on every read)
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def _in_image_pixels(tensor: torch.Tensor, resized: torch.Tensor, output: dict[str, torch.Tensor]) -> dict[str, list]:
    """The digits of one model output, in the pixels of the image ``resized`` was made from."""
    sy = tensor.shape[-2] / resized.shape[-2]
    sx = tensor.shape[-1] / resized.shape[-1]
    boxes, scores, labels = _digits_only(output["boxes"].float().cpu(), output["scores"].float().cpu(),
                                         output["labels"].cpu())
    return {"boxes": (boxes * torch.tensor([sx, sy, sx, sy])).tolist(), "scores": scores.tolist(),
            "digits": (labels - 1).tolist()}


def _detect_view(model: torch.nn.Module, tensors: Sequence[torch.Tensor], policy: InputSize, view: float,
                 batch_size: int, device: torch.device) -> list[dict[str, Any]]:
    """One view; only images the model sees at the same padded size share a batch (:func:`_same_padded_size`)."""
    results: list[dict[str, Any] | None] = [None] * len(tensors)
    with _in_eval_mode(model):
        for chunk in _same_padded_size(model, tensors, policy, view, batch_size):
            resized = [resize_by(tensors[i], policy.scale(*tensors[i].shape[-2:], view)) for i in chunk]
            outputs = model([r.to(device) for r in resized])
            for i, r, out in zip(chunk, resized, outputs):
                results[i] = _in_image_pixels(tensors[i], r, out)
    return results  # type: ignore[return-value]


def fuse_views(views: Sequence[dict[str, list]], iou: float) -> dict[str, list]:
    """One image's detections from several views, as one: weighted box fusion.

    Going down the scores, a box joins the surest cluster of its digit whose first box it overlaps
    by at least ``iou``, one box per view; otherwise it starts a cluster. A cluster's box is its
    boxes' score-weighted mean and its score their sum over the number of views, so a digit that
    only one view sees (a ring read as "0" at one size) loses score, and boxes that disagree by a
    few pixels settle between them.
    """
    boxes = np.array([b for v in views for b in v["boxes"]], dtype=np.float64).reshape(-1, 4)
    scores = np.array([s for v in views for s in v["scores"]], dtype=np.float64)
    digits = np.array([d for v in views for d in v["digits"]], dtype=np.int64)
    view_of = np.array([k for k, v in enumerate(views) for _ in v["scores"]], dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    joins = (box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).numpy() >= iou) & (digits[:, None] == digits)
    cluster = np.full(len(scores), -1)  # each box's cluster, named by its leader: its surest box
    has_view = np.zeros((len(scores), len(views)), dtype=bool)  # per leader, the views its cluster holds
    for i in order:
        open_leaders = np.flatnonzero((cluster == np.arange(len(scores))) & joins[:, i] & ~has_view[:, view_of[i]])
        leader = open_leaders[np.argmin(rank[open_leaders])] if len(open_leaders) else i
        cluster[i] = leader
        has_view[leader, view_of[i]] = True
    leaders = order[cluster[order] == order]  # surest first
    weight = np.zeros(len(scores))
    np.add.at(weight, cluster, scores)
    weighted = np.zeros_like(boxes)
    np.add.at(weighted, cluster, scores[:, None] * boxes)
    fused_boxes = weighted[leaders] / np.maximum(weight[leaders], 1e-12)[:, None]
    fused_scores = weight[leaders] / len(views)
    keep = np.argsort(-fused_scores, kind="stable")
    return {"boxes": fused_boxes[keep].tolist(), "scores": fused_scores[keep].tolist(),
            "digits": digits[leaders][keep].tolist()}


LETTER_COVERS_IOU = 0.5  # a digit box this much on a surer letter's box is that letter read as a digit


def _digits_only(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A model with a letter class (label ``LETTER_LABEL``) finds letters too: they are no digits, and
    a digit box on a glyph the model is surer is a letter is dropped with them (torchvision's
    per-class NMS keeps both boxes)."""
    is_letter = labels == LETTER_LABEL
    if not bool(is_letter.any()):
        return boxes, scores, labels
    # A letter is never surer than itself, so only digit boxes can be covered.
    surer = scores[is_letter][None, :] > scores[:, None]
    covered = ((box_iou(boxes, boxes[is_letter]) >= LETTER_COVERS_IOU) & surer).any(dim=1)
    keep = ~is_letter & ~covered
    return boxes[keep], scores[keep], labels[keep]


LINE_GAP = 1.0  # digits of one number stand at most this many digit heights apart


def _line_around(boxes: Sequence[Sequence[float]], candidates: Sequence[int], seed: int) -> list[int]:
    """The candidates on ``seed``'s line, left to right: similar height, centre within half a height, each
    at most ``LINE_GAP`` digit heights from its neighbour, so one chain of digits through the seed."""
    height = boxes[seed][3] - boxes[seed][1]
    centre = (boxes[seed][1] + boxes[seed][3]) / 2
    line = sorted((i for i in candidates
                   if abs((boxes[i][1] + boxes[i][3]) / 2 - centre) < 0.5 * height
                   and 0.6 <= (boxes[i][3] - boxes[i][1]) / max(height, 1e-6) <= 1.6), key=lambda i: boxes[i][0])
    lo = hi = line.index(seed)
    while lo > 0 and boxes[line[lo]][0] - boxes[line[lo - 1]][2] <= LINE_GAP * height:
        lo -= 1
    while hi + 1 < len(line) and boxes[line[hi + 1]][0] - boxes[line[hi]][2] <= LINE_GAP * height:
        hi += 1
    return line[lo:hi + 1]


def number_region(detection: dict[str, list], min_score: float) -> tuple[list[float], float] | None:
    """The box around the number and its digits' median height: the most confident digit and
    the digits beside it on its line."""
    boxes, scores = detection["boxes"], detection["scores"]
    keep = [i for i, s in enumerate(scores) if s >= min_score]
    if not keep:
        return None
    members = [boxes[i] for i in _line_around(boxes, keep, max(keep, key=lambda i: scores[i]))]
    heights = sorted(b[3] - b[1] for b in members)
    return enclosing_box(members), heights[len(heights) // 2]


def enclosing_box(boxes: Sequence[Sequence[float]]) -> list[float]:
    """The smallest xyxy box holding all of ``boxes`` (at least one)."""
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


# Around the region's boxes, in digit heights: above and below as the training crops are framed; left and right
# wider, so a digit pass 1 missed at the end of the number is inside the crop that pass 2 reads (chosen on
# synthetic validation: Task 2 0.757 at 0.3, 0.760 at 0.7, 0.757 at 1.2).
REGION_MARGIN = {"x": 0.7, "y": 0.3}


def _read_small_numbers_again(model: torch.nn.Module, tensors: Sequence[torch.Tensor], results: list[dict[str, Any]],
                              policy: InputSize, batch_size: int, device: torch.device, refine: RefinePolicy,
                              views: Sequence[float] = (1.0,), located_at: float = 1.0) -> set[int]:
    """Pass 2 (``refine``): the crops read, at each of ``views``, in place of pass 1's detections inside them
    (``located_at``: the view pass 1 read at); returns the images read again."""
    where = _small_number_crops(tensors, results, policy, refine, located_at)
    if not where:
        return set()
    read = _detect_at(model, [_crop(tensors[index], rect) for index, rect in where], input_size_of(model),
                      batch_size, device, views)
    if refine.follow > 0:
        where, read = _follow_the_line(model, tensors, where, read, refine, batch_size, device, views)
    for (index, rect), again in zip(where, read):
        results[index] = _crop_read_in_place(results[index], again, rect)
    return {index for index, _ in where}


def _small_number_crops(tensors: Sequence[torch.Tensor], results: list[dict[str, Any]], policy: InputSize,
                        refine: RefinePolicy, located_at: float) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(image index, crop rectangle) of each number whose digits pass 1 saw under ``refine.below_px``; every
    detection gets its number's ``region`` (None where no digit locates one)."""
    where = []
    for index, (tensor, detection) in enumerate(zip(tensors, results)):
        found = number_region(detection, refine.min_score)
        detection["region"] = found[0] if found else None
        if found is None or refine.below_px <= 0:
            continue
        (x0, y0, x1, y1), digit_h = found
        height, width = tensor.shape[-2:]
        if digit_h * policy.scale(height, width, located_at) >= refine.below_px:
            continue
        pad_x, pad_y = REGION_MARGIN["x"] * digit_h, REGION_MARGIN["y"] * digit_h
        rect = (max(0, math.floor(x0 - pad_x)), max(0, math.floor(y0 - pad_y)),
                min(width, math.ceil(x1 + pad_x)), min(height, math.ceil(y1 + pad_y)))
        if rect[2] - rect[0] >= 2 and rect[3] - rect[1] >= 2:
            where.append((index, rect))
    return where


def _crop(tensor: torch.Tensor, rect: tuple[int, int, int, int]) -> torch.Tensor:
    x0, y0, x1, y1 = rect
    return tensor[:, y0:y1, x0:x1]


def _crop_read_in_place(first: dict[str, Any], again: dict[str, list], rect: tuple[int, int, int, int]
                        ) -> dict[str, Any]:
    """Pass 1's detections with those inside ``rect`` replaced by the crop's (``again``, in crop pixels)."""
    cx0, cy0, cx1, cy1 = rect
    outside = [k for k, b in enumerate(first["boxes"])
               if not (cx0 <= (b[0] + b[2]) / 2 <= cx1 and cy0 <= (b[1] + b[3]) / 2 <= cy1)]
    return {
        "boxes": [[b[0] + cx0, b[1] + cy0, b[2] + cx0, b[3] + cy0] for b in again["boxes"]]
        + [first["boxes"][k] for k in outside],
        "scores": again["scores"] + [first["scores"][k] for k in outside],
        "digits": again["digits"] + [first["digits"][k] for k in outside],
        "region": [float(cx0), float(cy0), float(cx1), float(cy1)],
    }


def _follow_the_line(model: torch.nn.Module, tensors: Sequence[torch.Tensor], where: list[tuple[int, tuple]],
                     read: list[dict[str, Any]], refine: RefinePolicy, batch_size: int, device: torch.device,
                     views: Sequence[float]) -> tuple[list[tuple[int, tuple]], list[dict[str, Any]]]:
    """Pass 2's crops whose number runs to their left or right side, grown ``refine.follow`` digit heights
    that way and read again: pass 1, at a size where the digits are a few pixels tall, may have located
    only part of the number, and the crop around that part cuts the rest off."""
    grown = {}
    for k, ((index, rect), again) in enumerate(zip(where, read)):
        bigger = grown_crop(rect, number_region(again, refine.min_score), tensors[index].shape[-1], refine.follow)
        if bigger != rect:
            grown[k] = bigger
    if not grown:
        return where, read
    crops = [_crop(tensors[where[k][0]], rect) for k, rect in grown.items()]
    again = dict(zip(grown, _detect_at(model, crops, input_size_of(model), batch_size, device, views)))
    return ([(index, grown.get(k, rect)) for k, (index, rect) in enumerate(where)],
            [again.get(k, found) for k, found in enumerate(read)])


# A number whose outer digit lies within this many digit heights of its crop's side runs to that side.
FOLLOW_EDGE = 0.25


def grown_crop(rect: tuple[int, int, int, int], region: tuple[list[float], float] | None, image_width: int,
               follow: float) -> tuple[int, int, int, int]:
    """``rect`` (x0, y0, x1, y1 in the image) grown ``follow`` digit heights on each side its number's
    ``region`` (crop coordinates, from :func:`number_region`) runs to, within the image; ``rect`` itself
    where the number stays clear of both sides, touches only the image's edge, or none was read."""
    if region is None:
        return rect
    (rx0, _, rx1, _), digit_h = region
    x0, y0, x1, y1 = rect
    edge, step = FOLLOW_EDGE * digit_h, math.ceil(follow * digit_h)
    new_x0 = max(0, x0 - step) if x0 > 0 and rx0 <= edge else x0
    new_x1 = min(image_width, x1 + step) if x1 < image_width and rx1 >= (x1 - x0) - edge else x1
    return new_x0, y0, new_x1, y1


# ------------------------------------------------------------------ Task 2


def box_overlap(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(IoU, intersection over the smaller box)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - inter
    smaller = min(area_a, area_b)
    return (inter / union if union > 0 else 0.0), (inter / smaller if smaller > 0 else 0.0)


@dataclass(frozen=True)
class NumberReader:
    """How Task 2 turns one image's detections into a number.

    A number is read when its most confident digit (the anchor) scores at least ``anchor``; the digits
    beside it need only ``member``: a real digit next to a sure one is often scored lower, while a stray
    false digit on a wall seldom has a sure neighbour. With ``one_line`` only the anchor's
    line of digits is read (see ``_line_around``), so letters and texture elsewhere in a photo add no
    digits. ``one_line=False`` with ``anchor == member`` is the plain threshold: every digit scoring at
    least it, left to right (what a checkpoint without a recorded reader gets). ``single``, when set, is
    the score a number of one digit needs: a lone letter, ring or post on a wall is read as a digit far
    more often than a whole line of them is. ``gap``, when set, is the score a digit needs that lies between
    two digits of the line read: a thin "1" squeezed between its neighbours is often scored far lower than
    they are, and a stray mark seldom sits on a number's line between two of its digits. ``photos``, when
    set, reads photos instead (images the model's own input-size policy reduces, marked ``photo`` by
    :func:`detect`): a crop is a picture of a number, while a photo is mostly wall, where a lower score
    reads letters and rings as digits.
    """

    anchor: float = TASK2_THRESHOLD
    member: float = TASK2_THRESHOLD
    one_line: bool = True
    single: float | None = None
    gap: float | None = None
    photos: NumberReader | None = None

    def __post_init__(self) -> None:
        for name in ("anchor", "member", "single", "gap"):
            value = getattr(self, name)
            if name in ("single", "gap") and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"Task 2 reader: {name} {value!r} is not a score between 0 and 1")
        if self.single is not None and self.single < self.anchor:
            raise ValueError(f"Task 2 reader: single {self.single} is below anchor {self.anchor}; a number of "
                             "one digit needs at least the anchor")
        if self.member > self.anchor:
            raise ValueError(f"Task 2 reader: member {self.member} is above anchor {self.anchor}; the digits "
                             "beside the most confident one cannot need a higher score than it")
        if not isinstance(self.one_line, bool):
            raise ValueError(f"Task 2 reader: one_line {self.one_line!r} is not true or false")
        if self.gap is not None and not self.one_line:
            raise ValueError(f"Task 2 reader: gap {self.gap} needs a one-line reader (a plain threshold reads every "
                             "digit wherever it is, so no digit lies between two of a line's)")
        if self.gap is not None and self.gap > self.member:
            raise ValueError(f"Task 2 reader: gap {self.gap} is above member {self.member}: it is the lower score a "
                             "digit between two of the line's digits needs")
        if self.photos is not None and (not isinstance(self.photos, NumberReader) or self.photos.photos is not None):
            raise ValueError(f"Task 2 reader: photos {self.photos!r} is not a reader of its own (without photos)")

    def for_detection(self, detection: dict[str, Any]) -> NumberReader:
        """The reader of this image: ``photos`` for a photo, when set."""
        return self.photos if self.photos is not None and detection.get("photo") else self

    @classmethod
    def lone_check(cls) -> NumberReader:
        """The reader that asks whether a photo's surest digit stands alone (``view_photos`` "confirm"):
        fixed, so detections do not depend on the Task 2 reader they are later read with."""
        return cls(TASK2_THRESHOLD, TASK2_THRESHOLD)

    @classmethod
    def plain(cls, threshold: float) -> NumberReader:
        """Every digit scoring at least ``threshold``, wherever it is (the reader before anchors and lines)."""
        return cls(threshold, threshold, one_line=False)

    @classmethod
    def of(cls, reader: NumberReader | float) -> NumberReader:
        """``reader`` itself, or the plain reader of a bare threshold (what callers may pass instead)."""
        return reader if isinstance(reader, NumberReader) else cls.plain(reader)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> NumberReader:
        """The reader a checkpoint records (``task2_reader``), else its plain ``task2_threshold`` (else 0.5)."""
        recorded = meta.get("task2_reader")
        if recorded is None:
            threshold = meta.get("task2_threshold")
            return cls.plain(TASK2_THRESHOLD if threshold is None else threshold)
        return cls.from_dict(recorded)

    @classmethod
    def from_dict(cls, recorded: Any, nested: bool = False) -> NumberReader:
        """The reader of :meth:`as_dict`'s output (``nested``: a photos reader, which has none of its own)."""
        allowed = {"anchor", "member", "one_line", "single", "gap"} | (set() if nested else {"photos"})
        fields = set(recorded) if isinstance(recorded, dict) else set()
        if not {"anchor", "member"} <= fields <= allowed:
            raise ValueError(f"task2_reader {recorded!r} is not a dict of {', '.join(sorted(allowed))}")
        photos = recorded.get("photos")
        return cls(**{**recorded, "photos": None if photos is None else cls.from_dict(photos, nested=True)})

    def as_dict(self) -> dict[str, Any]:
        out = {"anchor": self.anchor, "member": self.member, "one_line": self.one_line}
        out.update({k: v for k, v in (("single", self.single), ("gap", self.gap)) if v is not None})
        return out if self.photos is None else {**out, "photos": self.photos.as_dict()}

    def describe(self) -> str:
        if not self.one_line and self.anchor == self.member:
            text = f"every digit scoring >= {self.anchor:.2f}"
        else:
            where = "the line of digits around it" if self.one_line else "every other digit"
            text = (f"a number needs one digit scoring >= {self.anchor:.2f}, then {where} scoring "
                    f">= {self.member:.2f}")
        if self.gap is not None:
            text = f"{text}; a digit between two of them needs >= {self.gap:.2f}"
        if self.single is not None:
            text = f"{text}; a number of one digit needs >= {self.single:.2f}"
        return text if self.photos is None else f"{text}. In a photo: {self.photos.describe()}"


def parse_reader(text: str) -> NumberReader:
    """``"A"`` (anchor = member = A), ``"A,M"`` or ``"A,M,S"`` (S: a one-digit number's score), one line,
    from a CLI value."""
    usage = f"Task 2 reader {text!r} must be ANCHOR, ANCHOR,MEMBER or ANCHOR,MEMBER,SINGLE (scores such as 0.7,0.6)"
    try:
        scores = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(usage) from None
    if len(scores) not in (1, 2, 3):
        raise ValueError(usage)
    return NumberReader(scores[0], scores[min(1, len(scores) - 1)], single=scores[2] if len(scores) == 3 else None)


def add_reader_arguments(parser: argparse.ArgumentParser,
                         reader_help: str = "read the line of digits around one scoring >= ANCHOR, its neighbours "
                                            ">= MEMBER; a number of one digit needs SINGLE (default: the "
                                            "checkpoint's reader)",
                         threshold_help: str = "plain threshold instead: every digit scoring at least this, "
                                               "wherever it is") -> None:
    """``--task2-reader`` and ``--task2-threshold``, one or the other: the same in core.predict and
    core.evaluate (which read with them) and core.checkpoint export (which records them)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--task2-reader", default=None, metavar="ANCHOR[,MEMBER[,SINGLE]]", help=reader_help)
    group.add_argument("--task2-threshold", type=float, default=None, help=threshold_help)
    parser.add_argument("--task2-gap", type=float, default=None, metavar="GAP",
                        help="with a one-line reader (the checkpoint's, or --task2-reader's): a digit between two "
                             "digits of the line read joins the number when it scores >= GAP (at most MEMBER)")
    parser.add_argument("--photo-reader", default=None, metavar="ANCHOR[,MEMBER[,SINGLE]]|same",
                        help="photos (images the model's input-size policy reduces) are read with this instead; "
                             "'same': as every other image (default: the checkpoint's, unless --task2-reader or "
                             "--task2-threshold replaces the whole reader)")


def reader_from_arguments(args: argparse.Namespace, base: LoadedModel | NumberReader) -> NumberReader:
    """The reader the arguments ask for; ``base``: the reader they change (a model's own, when a LoadedModel).
    ``--task2-reader`` and ``--task2-threshold`` replace all of it, photos' scores included; ``--photo-reader``
    sets those alone; ``--task2-gap`` is added to both."""
    if args.task2_reader is not None:
        reader = parse_reader(args.task2_reader)
    elif args.task2_threshold is not None:
        if not 0.0 <= args.task2_threshold <= 1.0:
            raise ValueError(f"--task2-threshold {args.task2_threshold:g} is not a score between 0 and 1")
        reader = NumberReader.plain(args.task2_threshold)
    else:
        reader = base.reader if isinstance(base, LoadedModel) else base
    return adjusted_reader(reader, args.photo_reader, args.task2_gap)


def adjusted_reader(reader: NumberReader, photo_reader: str | None = None, gap: float | None = None) -> NumberReader:
    """``reader`` with ``--photo-reader`` (a reader as text, or "same": photos read as every other image) and
    ``--task2-gap`` (added to photos' scores too) applied; None leaves either as it is."""
    if photo_reader is not None:
        try:
            photos = None if photo_reader == "same" else parse_reader(photo_reader)
        except ValueError as exc:
            raise ValueError(f"--photo-reader {photo_reader!r} (scores such as 0.8,0.7, or 'same'): {exc}") from None
        reader = replace(reader, photos=photos)
    if gap is None:
        return reader
    return replace(reader, gap=gap, photos=None if reader.photos is None else replace(reader.photos, gap=gap))


def read_digits(detection: dict[str, list], reader: NumberReader | float = TASK2_THRESHOLD) -> list[int]:
    """Indices of the detections that make up the number, left to right (``reader``: a
    :class:`NumberReader`, or a plain score threshold).

    Of boxes that cover the same digit (torchvision's NMS is per class, so a "1" and a "7" can both
    sit on one glyph) only the highest-scoring one counts.
    """
    reader = NumberReader.of(reader).for_detection(detection)
    boxes, scores = detection["boxes"], detection["scores"]
    candidates = sorted((i for i, s in enumerate(scores) if s >= reader.member), key=lambda i: -scores[i])
    kept: list[int] = []
    for i in candidates:
        if _not_a_duplicate(boxes, i, kept):
            kept.append(i)
    if not kept or scores[kept[0]] < reader.anchor:
        return []
    digits = _line_around(boxes, kept, kept[0]) if reader.one_line else kept
    if len(digits) == 1 and reader.single is not None and scores[digits[0]] < reader.single:
        return []
    if reader.gap is not None and len(digits) >= 2:
        digits = digits + _between(boxes, scores, digits, reader.gap, reader.member)
    return sorted(digits, key=lambda i: (boxes[i][0] + boxes[i][2]) / 2)


def _not_a_duplicate(boxes: Sequence[Sequence[float]], i: int, others: Sequence[int]) -> bool:
    return all(iou < DUPLICATE_IOU and cover < DUPLICATE_COVER
               for iou, cover in (box_overlap(boxes[i], boxes[j]) for j in others))


def _between(boxes: Sequence[Sequence[float]], scores: Sequence[float], line: Sequence[int], gap: float,
             member: float) -> list[int]:
    """Detections scoring from ``gap`` up to ``member`` that lie on ``line`` (centre within half its median height,
    height 0.6-1.6x it) with their centre between the centres of two of its digits, surest first, each no
    duplicate of a digit read."""
    height = statistics.median(boxes[i][3] - boxes[i][1] for i in line)
    middle = statistics.median((boxes[i][1] + boxes[i][3]) / 2 for i in line)
    centres = sorted((boxes[i][0] + boxes[i][2]) / 2 for i in line)
    added: list[int] = []
    for i in sorted((i for i, s in enumerate(scores) if gap <= s < member), key=lambda i: -scores[i]):
        x = (boxes[i][0] + boxes[i][2]) / 2
        on_line = abs((boxes[i][1] + boxes[i][3]) / 2 - middle) < 0.5 * height \
            and 0.6 <= (boxes[i][3] - boxes[i][1]) / max(height, 1e-6) <= 1.6
        if on_line and centres[0] < x < centres[-1] and _not_a_duplicate(boxes, i, [*line, *added]):
            added.append(i)
    return added


def read_region(detection: dict[str, list], reader: NumberReader | float = TASK2_THRESHOLD) -> list[float] | None:
    """The box around the digits ``reader`` reads (None when it reads none): where the number read is,
    which the crop pass 2 read (``detection["region"]``) need not be when a surer digit lies outside it."""
    digits = read_digits(detection, reader)
    return enclosing_box([detection["boxes"][i] for i in digits]) if digits else None


def read_number(detection: dict[str, list], reader: NumberReader | float = TASK2_THRESHOLD) -> str:
    """The whole number as a digit string, ``"-1"`` when no digit is read."""
    digits = [str(detection["digits"][i]) for i in read_digits(detection, reader)]
    return "".join(digits) if digits else "-1"


# ------------------------------------------------------------------ output formats


def coco_results(image_id: int, detection: dict[str, list]) -> list[dict[str, Any]]:
    """Task 1 entries for one image: bbox ``[x, y, w, h]``, category_id = digit + 1."""
    out = []
    for (x0, y0, x1, y1), score, digit in zip(detection["boxes"], detection["scores"], detection["digits"]):
        out.append({
            "image_id": int(image_id),
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
            "score": round(float(score), 5),
            "category_id": int(digit) + 1,
        })
    return out


def pred_json_bytes(results: list[dict[str, Any]]) -> bytes:
    return json.dumps(results).encode("utf-8")


def pred_csv_bytes(rows: Sequence[tuple[int, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_id", "pred_label"])
    for image_id, label in sorted(rows, key=lambda r: r[0]):
        writer.writerow([image_id, label])
    return buffer.getvalue().encode("utf-8")


def assign_image_ids(names: Sequence[str], contents: Sequence[bytes] | None = None) -> list[int]:
    """``123.png`` -> 123; other names (and a second ``123.jpg``) get ids after the largest numeric one,
    in name order, so the same set of files gets the same ids whatever order it comes in. Files with
    the very same name (uploads from two folders) are told apart by ``contents``, when given."""
    numbers = [numeric_stem(n) for n in names]
    digests = [hashlib.sha1(c).hexdigest() for c in contents] if contents is not None else [""] * len(names)
    order = sorted(range(len(names)), key=lambda i: (names[i], digests[i]))
    ids: list[int | None] = [None] * len(names)
    taken: set[int] = set()
    for index in order:
        if numbers[index] is not None and numbers[index] not in taken:
            ids[index] = numbers[index]
            taken.add(numbers[index])
    next_id = max((n for n in numbers if n is not None), default=0) + 1
    for index in (i for i in order if ids[i] is None):
        while next_id in taken:
            next_id += 1
        ids[index] = next_id
        taken.add(next_id)
    return ids  # type: ignore[return-value]


def image_ids_csv_bytes(names: Sequence[str], image_ids: Sequence[int]) -> bytes | None:
    """``file_name,image_id`` for a batch in which some file's id is not the number in its name (a name
    that is no number, or one used twice); None when every id is."""
    if all(numeric_stem(n) == i for n, i in zip(names, image_ids)):
        return None
    return ("file_name,image_id\n" + "".join(f"{n},{i}\n" for n, i in zip(names, image_ids))).encode()


@dataclass
class BatchPrediction:
    """What :func:`predict_images` found; the app and the CLI format it the same way."""

    names: list[str]
    image_ids: list[int]
    detections: list[dict[str, list] | None]  # None where the file could not be decoded
    numbers: list[str]
    errors: dict[str, str]
    seconds: float

    def coco(self) -> list[dict[str, Any]]:
        out = []
        for image_id, det in zip(self.image_ids, self.detections):
            if det is not None:
                out += coco_results(image_id, det)
        return out

    def csv_rows(self) -> list[tuple[int, str]]:
        return list(zip(self.image_ids, self.numbers))


def read_numbers(detections: Sequence[dict[str, list] | None], reader: NumberReader) -> list[str]:
    """Task 2 of a batch: each image's number, ``-1`` also for a file that could not be decoded (None)."""
    return [read_number(d, reader) if d is not None else "-1" for d in detections]


def join_predictions(parts: Sequence[BatchPrediction], reader: NumberReader,
                     contents: Sequence[bytes] | None = None) -> BatchPrediction:
    """One prediction of every file of ``parts``, in order, as :func:`predict_images` would have made it
    in one call: image ids assigned over all the names (``contents``: the files' bytes, which tell files
    of one name apart), numbers read by ``reader``. Lets a caller keep each file's result (the app's
    cache) and read a longer list without running the model again."""
    names = [name for part in parts for name in part.names]
    detections = [det for part in parts for det in part.detections]
    errors = {name: reason for part in parts for name, reason in part.errors.items()}
    return BatchPrediction(names, assign_image_ids(names, contents), detections, read_numbers(detections, reader),
                           errors, sum(part.seconds for part in parts))


def repeated_names(names: Sequence[str]) -> list[str]:
    """Names that more than one file of a batch carries, in name order."""
    return sorted(n for n, count in collections.Counter(names).items() if count > 1)


def predict_images(loaded: LoadedModel, sources: Sequence[tuple[str, bytes | str]], batch_size: int = 8,
                   reader: NumberReader | None = None, progress: Callable[[int, int], None] | None = None,
                   image_ids: Sequence[int] | None = None, input_size: int | str | None = None) -> BatchPrediction:
    """Decode and detect ``(name, bytes-or-path)`` pairs; a bad file is reported, the rest still run.
    ``reader``: how numbers are read (default: the checkpoint's)."""
    reader = loaded.reader if reader is None else reader
    names = [name for name, _ in sources]
    ids = list(image_ids) if image_ids is not None else assign_image_ids(names)
    detections: list[dict[str, list] | None] = [None] * len(sources)
    errors: dict[str, str] = {}
    started = time.perf_counter()
    for start in range(0, len(sources), batch_size * 4):
        decoded, where = [], []
        for index in range(start, min(start + batch_size * 4, len(sources))):
            name, data = sources[index]
            try:
                decoded.append(decode_image(data, name))
                where.append(index)
            except ImageDecodeError as exc:
                errors[name] = exc.reason
        for index, det in zip(where, detect(loaded, decoded, batch_size, input_size=input_size)):
            detections[index] = det
        if progress is not None:
            progress(min(start + batch_size * 4, len(sources)), len(sources))
    return BatchPrediction(names, ids, detections, read_numbers(detections, reader), errors,
                           time.perf_counter() - started)


def _stored_rotated(path: str) -> bool:
    from core.data import image_frame

    try:
        return image_frame(path)[1] != 1
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    from core.config import HelpFormatter

    parser = argparse.ArgumentParser(prog="python -m core.predict", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--ckpt", default=DEFAULT_CHECKPOINT, help="checkpoint (.pt) to use")
    parser.add_argument("--images", required=True, help="folder of images (123.png -> image_id 123)")
    parser.add_argument("--out", required=True, help="folder to write pred.json and pred.csv into")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_reader_arguments(parser)
    parser.add_argument("--input-size", default=None,
                        help="'auto' (the checkpoint's own policy, the default) or a fixed short side in px "
                             "for the first pass: larger finds smaller digits in a photo, but enlarges a close-up "
                             "whose number fills it past the digit sizes the model learned, and reads it worse")
    args = parser.parse_args(argv)
    try:
        input_size = parse_input_size(args.input_size)
    except ValueError as exc:
        parser.error(f"--input-size: {exc}")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if os.path.isfile(args.images):
        parser.error(f"--images {args.images} is a file: pass the folder that holds it "
                     f"({os.path.dirname(args.images) or '.'})")
    if not os.path.isdir(args.images):
        parser.error(f"--images {args.images}: no such folder")
    try:
        check_output_dir(args.out, "--out")
    except ValueError as exc:
        parser.error(str(exc))
    paths = list_images(args.images)
    if not paths:
        parser.error(f"--images {args.images}: no image files (png, jpg, jpeg, bmp, webp, gif, tif)")
    try:
        loaded = load_model(args.ckpt, args.device)
        reader = reader_from_arguments(args, loaded)
    except (CheckpointError, ValueError) as exc:
        print(f"core.predict: error: {exc}", file=sys.stderr)
        return 2
    print(f"core.predict: {loaded.meta.get('arch')} from {args.ckpt} on {loaded.device}; "
          f"{len(paths)} images; {loaded.inference_note(input_size)}; Task 2: {reader.describe()}", flush=True)

    def progress(done: int, total: int) -> None:
        print(f"  {done}/{total} images", flush=True)

    prediction = predict_images(loaded, [(os.path.basename(p), p) for p in paths], args.batch_size,
                                reader, progress, input_size=input_size)
    os.makedirs(args.out, exist_ok=True)
    from core.checkpoint import atomic_write_bytes

    atomic_write_bytes(os.path.join(args.out, "pred.json"), lambda h: h.write(pred_json_bytes(prediction.coco())))
    atomic_write_bytes(os.path.join(args.out, "pred.csv"), lambda h: h.write(pred_csv_bytes(prediction.csv_rows())))
    mapping = image_ids_csv_bytes(prediction.names, prediction.image_ids)
    if mapping is not None:
        atomic_write_bytes(os.path.join(args.out, "image_ids.csv"), lambda h: h.write(mapping))
        print("  some file names are not numbers: their ids are listed in image_ids.csv")
    elif os.path.exists(os.path.join(args.out, "image_ids.csv")):  # an earlier run's ids would misname these
        os.unlink(os.path.join(args.out, "image_ids.csv"))
    for name, reason in prediction.errors.items():
        print(f"  skipped {name}: {reason}", file=sys.stderr)
    turned = [os.path.basename(p) for p in paths if os.path.basename(p) not in prediction.errors and _stored_rotated(p)]
    if turned:
        print(f"  {len(turned)} image(s) stored rotated ({', '.join(turned[:5])}{', ...' if len(turned) > 5 else ''}) "
              "were read upright, as viewers show them (EXIF orientation): their boxes in pred.json refer to that "
              "upright picture, not to the stored pixels a dataset's boxes refer to (python -m core.data)")
    per_image = prediction.seconds / max(len(paths), 1)
    print(f"core.predict: wrote {os.path.join(args.out, 'pred.json')} ({len(prediction.coco())} boxes) and pred.csv "
          f"({len(paths)} rows) in {prediction.seconds:.1f} s ({per_image * 1000:.0f} ms/image)"
          + (f"; {len(prediction.errors)} unreadable file(s)" if prediction.errors else ""))
    return 0 if not prediction.errors else 1


if __name__ == "__main__":
    sys.exit(main())
