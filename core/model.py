"""Detector architectures: the reference Faster R-CNN and a compact one for CPUs.

Every model is rebuilt from ``(arch, model_kwargs)`` alone, which is what
checkpoints store, so inference never needs the training config.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models import resnet as tv_resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import (
    FasterRCNN_ResNet50_FPN_V2_Weights,
    FastRCNNPredictor,
    TwoMLPHead,
    fasterrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from core.checkpoint import CheckpointError, load_checkpoint, safe_torch_load

NUM_CLASSES = 11  # background + digits 0..9
WITH_LETTER_CLASS = 12  # ... + letters, for models trained on boxed letters; never output as digits
LETTER_LABEL = 11  # core.data.LETTER_ID: the category a dataset boxes letters with is the model's label
MAX_INPUT_SIDE = 2000  # no input size policy or override may ask the model for more than this
CLASS_NAMES = [str(d) for d in range(10)]  # label k (1..10) is digit k-1


def class_names(num_classes: int = NUM_CLASSES) -> list[str]:
    """What labels 1, 2, ... of a model with ``num_classes`` mean (a checkpoint's ``class_names``)."""
    return CLASS_NAMES + ["letter"] * (num_classes - NUM_CLASSES)


class ModelError(ValueError):
    """An architecture name, model option or weights file that cannot be used."""


@dataclass(frozen=True)
class ArchSpec:
    builder: Callable[..., tuple[nn.Module, str]]
    defaults: dict[str, Any]
    summary: str


# ---------------------------------------------------------------- reference


def _cached_weights_file(url: str) -> str | None:
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return path if os.path.isfile(path) else None


def _anchor_generator(kw: dict[str, Any]) -> AnchorGenerator:
    # One size tuple per feature level, the same aspect ratios on every level.
    return AnchorGenerator(
        sizes=tuple(tuple(s) for s in kw["anchor_sizes"]),
        aspect_ratios=(tuple(kw["aspect_ratios"]),) * len(kw["anchor_sizes"]),
    )


def _detector_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """The FasterRCNN keyword arguments both architectures take from their model kwargs."""
    min_size = kw["min_size"]
    return dict(
        min_size=min_size if isinstance(min_size, int) else tuple(min_size),
        max_size=kw["max_size"],
        rpn_pre_nms_top_n_train=kw["rpn_pre_nms_top_n_train"],
        rpn_pre_nms_top_n_test=kw["rpn_pre_nms_top_n_test"],
        rpn_post_nms_top_n_train=kw["rpn_post_nms_top_n_train"],
        rpn_post_nms_top_n_test=kw["rpn_post_nms_top_n_test"],
        box_batch_size_per_image=kw["box_batch_size_per_image"],
        box_detections_per_img=kw["box_detections_per_img"],
        box_score_thresh=kw["box_score_thresh"],
    )


def _build_resnet50_fpn_v2(kw: dict[str, Any], weights: str | None) -> tuple[nn.Module, str]:
    anchor_generator = _anchor_generator(kw)
    detector_kwargs = _detector_kwargs(kw)
    default_anchors = _resnet50_defaults()["anchor_sizes"] == kw["anchor_sizes"] and tuple(
        kw["aspect_ratios"]
    ) == (0.5, 1.0, 2.0)

    def from_scratch(note: str) -> tuple[nn.Module, str]:
        model = fasterrcnn_resnet50_fpn_v2(
            weights=None, weights_backbone=None, num_classes=kw["num_classes"], **detector_kwargs
        )
        model.rpn.anchor_generator = anchor_generator
        if not default_anchors:
            _replace_rpn_head(model, anchor_generator, conv_depth=2)
        _install_fixed_size(model, None)
        _install_views(model, kw)
        _install_line_heights(model, kw)
        _freeze_backbone_layers(model, 5 if kw["trainable_backbone_layers"] is None else kw["trainable_backbone_layers"])
        return model, note

    layers = kw["trainable_backbone_layers"]
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or not 0 <= layers <= 5):
        raise ModelError(f"trainable_backbone_layers={layers!r} must be an integer from 0 to 5")

    if weights == "none":
        return from_scratch("pretrained weights disabled (--weights none): training from scratch")

    coco = FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1
    if weights in (None, "auto"):
        cached = _cached_weights_file(coco.url)
        if cached is None:
            return from_scratch(
                f"no COCO weights in the torch hub cache ({os.path.basename(coco.url)}): training from scratch"
            )
        weights_path, source = cached, "torchvision COCO_V1 weights from the hub cache"
    else:
        weights_path, source = weights, f"weights from {weights}"

    if kw["trainable_backbone_layers"] is None:
        # torchvision's default with pretrained weights: conv1 and layer1 stay frozen. Recorded
        # in the kwargs, so a rebuild (resume, inference) freezes the same layers.
        kw["trainable_backbone_layers"] = 3
    model, _ = from_scratch("")
    # The 91-class COCO predictor (and any re-shaped anchor head) is re-initialised.
    return model, _load_matching(model, weights_path, kw["arch"], source)


MIN_WEIGHTS_COVERAGE = 0.5  # below this a weights file is another architecture, not a head to re-initialise


def _load_matching(model: nn.Module, path: str, arch: str, source: str) -> str:
    """Load the tensors of ``path`` whose names and shapes fit ``model``; returns the weights note.

    A file from another architecture shares only scalars and small biases with the model: refuse
    it rather than "load" 1% of the weights and silently train from scratch.
    """
    own = model.state_dict()
    state = _load_state_dict_file(path, arch, set(own))
    grown = _with_added_classes(state, own)
    usable = {k: v for k, v in grown.items() if k in own and own[k].shape == v.shape}
    total = sum(v.numel() for v in own.values())
    covered = sum(v.numel() for v in usable.values())
    if covered < MIN_WEIGHTS_COVERAGE * total:
        raise ModelError(f"{path}: only {covered / total:.1%} of {arch}'s weights fit this file "
                         f"(is it a checkpoint of another architecture or width? pass the matching "
                         f"--arch, and --width for a digitnet_fpn grown by core.checkpoint grow)")
    model.load_state_dict(usable, strict=False)
    skipped = sorted(set(own) - set(usable))
    added = sorted(k for k in grown if k.endswith("cls_score.bias") and grown[k].shape != state[k].shape)
    return f"loaded {source} ({len(usable)} tensors" + (
        f"; {len(skipped)} re-initialised, e.g. {skipped[0]}" if skipped else "") + (
        f"; the box predictor grew {own[added[0]].shape[0] - state[added[0]].shape[0]} class(es) (letters)"
        if added else "") + ")"


def _with_added_classes(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A digits-only box predictor grown to ``own``'s extra classes (the letter class): the digits and
    background keep what they learnt; a new class starts from the model's own initial rows."""
    grown = dict(state)
    for name in ("cls_score", "bbox_pred"):
        for part in ("weight", "bias"):
            key = next((k for k in state if k.endswith(f"box_predictor.{name}.{part}")), None)
            if key is None or key not in own:
                continue
            old, new = state[key], own[key]
            if old.shape[1:] == new.shape[1:] and old.shape[0] < new.shape[0]:
                grown[key] = torch.cat([old, new[old.shape[0]:].to(old.dtype)])
    return grown


def _load_state_dict_file(path: str, arch: str, names: set[str]) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (a bare one, or the ``model`` of ours or of torchvision's reference trainer).
    A file none of whose names is one of ``names`` (the model's) holds no weights of ``arch`` at all: it is named
    with what it holds, not measured as "0% of the weights fit"."""
    try:
        loaded = safe_torch_load(path)
    except CheckpointError as exc:
        raise ModelError(f"weights file {exc}") from None
    theirs = loaded.get("arch") if isinstance(loaded, dict) else None
    if isinstance(theirs, str) and theirs in ARCHITECTURES and theirs != arch:  # one of ours, of the other model
        raise ModelError(f"{path} is a {theirs} checkpoint, not a {arch} one: set the architecture to {theirs} "
                         f"(--arch {theirs})")
    state = loaded["model"] if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict) else loaded
    tensors = [k for k, v in state.items() if isinstance(v, torch.Tensor)] if isinstance(state, dict) else []
    if not names.intersection(tensors):
        raise ModelError(f"{path} is not a checkpoint: no {arch + ' ' if tensors else 'model '}weights in it "
                         f"({_holding(loaded)})")
    if len(tensors) != len(state):
        raise ModelError(f"{path}: expected a state dict of tensors")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # float16 exports


def _holding(value: Any) -> str:
    """What a loaded file holds, in a few words: "a dict of 'hello', 'step'", "a list of 3 items"."""
    if isinstance(value, dict):
        keys = [repr(k) for k in list(value)[:4]]
        more = f" and {len(value) - 4} more" if len(value) > 4 else ""
        return f"a dict of {', '.join(keys)}{more}" if keys else "an empty dict"
    if isinstance(value, torch.Tensor):
        return f"one tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def _freeze_backbone_layers(model: FasterRCNN, trainable: int) -> None:
    """torchvision's ``trainable_backbone_layers``: only the last ``trainable`` ResNet stages learn."""
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable] + (["bn1"] if trainable == 5 else [])
    for name, parameter in model.backbone.body.named_parameters():
        parameter.requires_grad_(any(name.startswith(stage) for stage in train))


def _replace_rpn_head(model: FasterRCNN, anchor_generator: AnchorGenerator, conv_depth: int) -> None:
    channels = model.backbone.out_channels
    model.rpn.head = RPNHead(channels, anchor_generator.num_anchors_per_location()[0], conv_depth=conv_depth)


def _resnet50_defaults() -> dict[str, Any]:
    # torchvision's own defaults: the reference configuration of the course report.
    return dict(
        min_size=800,
        max_size=1333,
        anchor_sizes=[[32], [64], [128], [256], [512]],
        aspect_ratios=[0.5, 1.0, 2.0],
        rpn_pre_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_train=2000,
        rpn_post_nms_top_n_test=1000,
        box_batch_size_per_image=512,
        box_detections_per_img=100,
        box_score_thresh=0.05,
        trainable_backbone_layers=None,  # 3 with pretrained weights, 5 from scratch (torchvision's rule)
        # One view unless a checkpoint asks for more (core.checkpoint export --views): see core.predict.fuse_views.
        view_scales=[1.0],
        view_fuse_iou=VIEW_FUSE_IOU,
        view_photos="once",
        crop_views="apart",
        line_heights="own",
    )


# ---------------------------------------------------------------- input size


@dataclass(frozen=True)
class InputSize:
    """How large an image is when the model sees it.

    ``auto``: the image's own resolution, with the short side raised to at least ``min_short``
    (small crops are enlarged) and lowered to at most ``max_short``, and the long side at most
    ``max_long`` (large photos are reduced). Small digits in a large image stay as large as they
    are instead of being shrunk away. ``fixed``: torchvision's rule, short side ``min_short``
    and long side at most ``max_long``.
    """

    mode: str
    min_short: int
    max_short: int
    max_long: int

    def scale(self, height: int, width: int, view: float = 1.0) -> float:
        """The resize factor of an image of ``height`` x ``width``; ``view``: a multiple of the
        policy's size (one of a model's :func:`view_scales_of`), never past ``MAX_INPUT_SIDE``."""
        short, long = min(height, width), max(height, width)
        if self.mode == "fixed":
            target = self.min_short
        else:
            target = min(max(short, self.min_short), self.max_short)
        return min(view * min(target / short, self.max_long / long), MAX_INPUT_SIDE / long)

    def padded_size(self, height: int, width: int, size_divisible: int = 32, view: float = 1.0) -> tuple[int, int]:
        """The padded size at which the model sees an image of ``height`` x ``width`` (at ``view``).

        Mirrors :func:`resize_by` (``interpolate`` with ``recompute_scale_factor``: each side is
        floor(side x scale)) and the transform's padding to ``size_divisible``.
        """
        scale = self.scale(height, width, view)
        out_h, out_w = (height, width) if scale == 1.0 else (math.floor(height * scale), math.floor(width * scale))
        return math.ceil(out_h / size_divisible) * size_divisible, math.ceil(out_w / size_divisible) * size_divisible

    def describe(self) -> str:
        if self.mode == "fixed":
            return f"short side {self.min_short} px (long side <= {self.max_long})"
        return (f"auto: each image near its own size, enlarged to a short side of at least {self.min_short} px, "
                f"reduced to a short side of at most {self.max_short} px and a long side of at most {self.max_long} px")


def input_size_of(model: nn.Module, override: int | str | None = None) -> InputSize:
    """The policy ``model`` was trained with, or ``override``: "auto" or a short side in pixels."""
    transform = getattr(getattr(model, "module", model), "transform", None)
    if isinstance(transform, PolicyTransform):
        policy = transform.policy
    elif transform is not None:  # a torchvision detector built elsewhere: its own fixed rule
        policy = InputSize("fixed", int(transform.min_size[-1]), int(transform.min_size[-1]), int(transform.max_size))
    else:
        raise ModelError(f"{type(model).__name__} has no detection transform to size its input")
    if override in (None, "auto"):
        return policy
    if isinstance(override, bool) or not isinstance(override, int) or not 16 <= override <= MAX_INPUT_SIDE:
        raise ModelError(f"input size {override!r} must be 'auto' or a short side of 16-{MAX_INPUT_SIDE} px")
    return InputSize("fixed", override, override, MAX_INPUT_SIDE)  # the short side is what was asked for


@dataclass(frozen=True)
class RefinePolicy:
    """Read a small number twice: when the digits found in the whole image are shorter than
    ``below_px`` at the model's input, the number's region is cropped and read again at the size
    the model reads best (a crop enlarged to its ``auto`` size). ``min_score``: the detections
    that locate the number. ``below_px`` 0 reads once."""

    below_px: float
    min_score: float
    follow: float = 0.0  # digit heights a crop grows by where the number read there runs to its edge; 0: never

    def describe(self) -> str:
        if self.below_px <= 0:
            return "one pass"
        text = f"numbers with digits under {self.below_px:g} px at that size are read again from their crop"
        if self.follow > 0:
            text += (f" (a crop whose number runs to its side grows {self.follow:g} digit heights that way and is "
                     "read again)")
        return text


@dataclass(frozen=True)
class CloserLook:
    """Look again, closer, at a large photo where pass 1 found no sure digit: the whole image at a
    larger input size (short side up to ``max_short``, long side up to ``max_long``), whose detections
    replace pass 1's only when one of their digits scores at least ``min_score`` and was under
    ``small_px`` tall at pass 1's size.

    Pass 1 reduces a 1,280 px photo to a 512 px long side, where a 12 px digit is 5 px: too small to
    find. Reading every photo at the larger size reads more walls as digits; looking closer only where
    pass 1's best digit scored under ``trigger`` (the reader's anchor: pass 1 read no number), and
    trusting only a sure digit that pass 1 saw too small to judge, finds small plates without them.

    ``follow``: digit heights by which a crop of the closer look's second pass grows where the number read in it
    runs to the crop's side (0: never). The closer look's own pass 1 sees the digits under ``small_px`` tall
    and may locate one digit of four; the crop round that digit cuts the rest off. ``locate``: the score at
    which a detection of that pass 1 locates a number for the second pass (0: the first look's
    ``RefinePolicy.min_score``); at 9 px a plate's digits may score no more than 0.1-0.2 there."""

    max_short: int
    max_long: int
    trigger: float
    min_score: float
    small_px: float
    follow: float = 0.0
    locate: float = 0.0

    def input_size(self, first: InputSize) -> InputSize:
        return InputSize("auto", first.min_short, self.max_short, self.max_long)

    def refine_policy(self, first: RefinePolicy) -> RefinePolicy:
        """How the closer look's second pass reads its crops: as the first look's, growing them by the larger
        of the two ``follow`` settings, located at ``locate`` where set."""
        return replace(first, follow=max(first.follow, self.follow), min_score=self.locate or first.min_score)

    def worth_it(self, first: InputSize, height: int, width: int) -> bool:
        """Only where pass 1 reduced the image noticeably more than the closer look would."""
        return self.input_size(first).scale(height, width) > 1.2 * first.scale(height, width)

    def keeps(self, found: dict[str, list], first_scale: float) -> bool:
        """Whether the closer look's detections replace pass 1's: a sure digit pass 1 saw too small."""
        return any(score >= self.min_score and (box[3] - box[1]) * first_scale < self.small_px
                   for score, box in zip(found["scores"], found["boxes"]))

    def describe(self) -> str:
        text = (f"a photo in which no digit scored {self.trigger:g} is looked at again with its long side up to "
                f"{self.max_long} px (short side up to {self.max_short} px); what that closer look finds is kept "
                f"when a digit there scores {self.min_score:g} and was too small for the first look to judge "
                f"(under {self.small_px:g} px tall there)")
        if self.locate > 0:
            text += f"; there, a digit scoring {self.locate:g} locates a number to read again from its crop"
        if self.follow > 0:
            text += (f"; there, a crop whose number runs to its side grows {self.follow:g} digit heights that way "
                     "and is read again")
        return text


def closer_look_of(model: nn.Module) -> CloserLook | None:
    return getattr(getattr(model, "module", model), "closer_look", None)


def _closer_look(kw: dict[str, Any]) -> CloserLook | None:
    """From the ``closer_*`` model kwargs (``closer_max_long`` 0, the default: no closer look)."""
    look = CloserLook(int(kw.get("closer_max_short", 0)), int(kw.get("closer_max_long", 0)),
                      float(kw.get("closer_trigger", 1.0)), float(kw.get("closer_min_score", 1.0)),
                      float(kw.get("closer_small_px", 0)), _follow_heights(kw, "closer_follow"),
                      float(kw.get("closer_locate", 0.0)))
    if look.max_long <= 0:
        return None
    if kw.get("size_policy") != "auto":
        raise ModelError("a closer look (closer_max_long > 0) needs the auto input size")
    if not kw["auto_max_short"] <= look.max_short <= look.max_long <= MAX_INPUT_SIDE:
        raise ModelError(f"closer look: need auto_max_short {kw['auto_max_short']} <= closer_max_short "
                         f"{look.max_short} <= closer_max_long {look.max_long} <= {MAX_INPUT_SIDE}")
    for name in ("trigger", "min_score", "locate"):
        if not 0.0 <= getattr(look, name) <= 1.0:
            raise ModelError(f"closer_{name} {getattr(look, name)!r} must be a score between 0 and 1")
    if look.small_px <= 0:
        raise ModelError(f"closer_small_px {look.small_px!r} must be a positive digit height in px")
    return look


VIEW_SCALE_RANGE = (0.5, 2.0)
VIEW_FUSE_IOU = 0.55  # weighted box fusion's usual overlap for boxes of one object


def view_scales_of(model: nn.Module) -> tuple[float, ...]:
    """The multiples of its input size at which ``model`` reads each image; ``(1.0,)``: once."""
    return getattr(getattr(model, "module", model), "view_scales", (1.0,))


def view_fuse_iou_of(model: nn.Module) -> float:
    return getattr(getattr(model, "module", model), "view_fuse_iou", VIEW_FUSE_IOU)


# How a model with several views reads an image its input size reduces (a photo): "once" locates the number at the
# policy's size and reads only the kept read at every view, like any image; "confirm" reads a photo whose surest digit
# stands alone again, whole at every view (locate, read the crop), and fuses those readings, so a ring or a letter
# that one view locates must be found at the other sizes too (README "Confirming a lone digit in a photo").
VIEW_PHOTOS = ("once", "confirm")


def view_photos_of(model: nn.Module) -> str:
    return getattr(getattr(model, "module", model), "view_photos", "once")


# How the views of a second-pass crop are read: "apart", each in a forward pass of its own; "batched", all of one
# crop's views in one pass, padded to the largest. A crop is small, so a pass costs mostly its fixed part (proposals,
# NMS, box head): the three views of a dev image's crop take 1.3x less time together, and the smaller views see
# more zero padding at their right and bottom, which can move their scores (README "Reading a crop's views
# together"). Crops share a batch only with crops whose largest view pads to the same size, so what an image reads
# never depends on what it came with.
CROP_VIEWS = ("apart", "batched")


def crop_views_of(model: nn.Module) -> str:
    return getattr(getattr(model, "module", model), "crop_views", "apart")


def _install_views(model: nn.Module, kw: dict[str, Any]) -> None:
    """From the ``view_scales`` (distinct multiples of the input size, 1.0 among them),
    ``view_fuse_iou``, ``view_photos`` and ``crop_views`` model kwargs."""
    scales = tuple(float(v) for v in kw.get("view_scales", [1.0]))
    low, high = VIEW_SCALE_RANGE
    if 1.0 not in scales or len(set(scales)) != len(scales) or not all(low <= v <= high for v in scales):
        raise ModelError(f"view_scales {list(scales)!r} must be distinct multiples of the input size in "
                         f"{low:g}..{high:g}, 1.0 among them")
    fuse_iou = kw.get("view_fuse_iou", VIEW_FUSE_IOU)
    if not 0.0 < fuse_iou < 1.0:
        raise ModelError(f"view_fuse_iou {fuse_iou!r} must be an IoU between 0 and 1")
    photos = kw.get("view_photos", "once")
    if photos not in VIEW_PHOTOS:
        raise ModelError(f"view_photos {photos!r} must be one of {', '.join(VIEW_PHOTOS)}")
    crop_views = kw.get("crop_views", "apart")
    if crop_views not in CROP_VIEWS:
        raise ModelError(f"crop_views {crop_views!r} must be one of {', '.join(CROP_VIEWS)}")
    model.view_scales, model.view_fuse_iou, model.view_photos = scales, float(fuse_iou), photos
    model.crop_views = crop_views


# How the boxes of the number read are drawn: "own", each digit's box as the model found it; "shared", the digits
# of that line share their median height, each box keeping its centre, as SVHN's annotators boxed every number
# (core.predict.share_line_height; README "One box height per number").
LINE_HEIGHTS = ("own", "shared")


def line_heights_of(model: nn.Module) -> str:
    return getattr(getattr(model, "module", model), "line_heights", "own")


def _install_line_heights(model: nn.Module, kw: dict[str, Any]) -> None:
    value = kw.get("line_heights", "own")
    if value not in LINE_HEIGHTS:
        raise ModelError(f"line_heights {value!r} must be one of {', '.join(LINE_HEIGHTS)}")
    model.line_heights = value


def refine_policy_of(model: nn.Module) -> RefinePolicy:
    # A model without one (the reference) reads once; its number region is where digits score >= 0.5.
    return getattr(getattr(model, "module", model), "refine_policy", RefinePolicy(0.0, 0.5))


def resize_by(image: torch.Tensor, scale: float) -> torch.Tensor:
    """Resize a CHW image by ``scale`` exactly as torchvision's detection transform does."""
    if scale == 1.0:
        return image
    return torch.nn.functional.interpolate(image[None], scale_factor=scale, mode="bilinear",
                                           recompute_scale_factor=True, align_corners=False)[0]


class PolicyTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform with an :class:`InputSize` policy.

    Training: ``fixed`` draws a short side from ``min_size`` per image (torchvision's multi-scale
    training); ``auto`` resizes by the policy times a random factor from ``train_jitter``. At
    inference the transform leaves images as they come: ``core.predict.detect`` resizes them by
    ``policy`` (or the user's override) first, so there is one resize and one definition of it.
    """

    def __init__(self, policy: InputSize, train_sizes: tuple[int, ...], train_jitter: tuple[float, float],
                 **kwargs):
        super().__init__(min_size=train_sizes, max_size=policy.max_long, **kwargs)
        self.policy = policy
        self.train_jitter = train_jitter

    def resize(self, image, target=None):
        if not self.training:
            return image, target
        h, w = image.shape[-2:]
        if self.policy.mode == "fixed":
            scale = replace(self.policy, min_short=self.torch_choice(self.min_size)).scale(h, w)
        else:
            low, high = self.train_jitter
            jitter = math.exp(float(torch.empty(1).uniform_(math.log(low), math.log(high))))
            scale = min(self.policy.scale(h, w) * jitter, self.policy.max_long / max(h, w))
        image = resize_by(image, scale)
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
        return image, target


def _install_transform(model: FasterRCNN, policy: InputSize, train_sizes: tuple[int, ...],
                       train_jitter: tuple[float, float] = (1.0, 1.0)) -> None:
    old = model.transform
    model.transform = PolicyTransform(policy, train_sizes, train_jitter, image_mean=old.image_mean,
                                      image_std=old.image_std, size_divisible=old.size_divisible)


def _install_fixed_size(model: FasterRCNN, test_min_size: int | None) -> None:
    """torchvision's rule as a policy: training draws from min_size, inference uses test_min_size
    (multi-scale training wants an evaluation size from the middle of the range, not min_size[-1])."""
    sizes = tuple(int(s) for s in model.transform.min_size)
    if test_min_size is not None:
        sizes = tuple(s for s in sizes if s != test_min_size) + (int(test_min_size),)
    _install_transform(model, InputSize("fixed", sizes[-1], sizes[-1], int(model.transform.max_size)), sizes)


def _follow_heights(kw: dict[str, Any], key: str) -> float:
    """A follow-the-line setting (``refine_follow``, ``closer_follow``): digit heights, 0 (off) to 10."""
    follow = kw.get(key, 0.0)
    if isinstance(follow, bool) or not isinstance(follow, (int, float)) or not 0 <= follow <= 10:
        raise ModelError(f"{key} {follow!r} must be 0 (off) to 10 digit heights")
    return float(follow)


def _install_input_size(model: FasterRCNN, kw: dict[str, Any]) -> None:
    below, min_score = kw.get("refine_below_px", 0), kw.get("refine_min_score", 1.0)
    if not 0 <= min_score <= 1:
        raise ModelError(f"refine_min_score {min_score!r} must be a score between 0 and 1")
    model.refine_policy = RefinePolicy(float(below), float(min_score), _follow_heights(kw, "refine_follow"))
    model.closer_look = _closer_look(kw)
    _install_views(model, kw)
    _install_line_heights(model, kw)
    if kw.get("size_policy", "fixed") == "fixed":
        _install_fixed_size(model, kw.get("test_min_size"))
        return
    if kw["size_policy"] != "auto":
        raise ModelError(f"size_policy {kw['size_policy']!r} must be 'auto' or 'fixed'")
    jitter = kw["train_scale_jitter"]
    if len(jitter) != 2 or not 0 < jitter[0] <= jitter[1]:
        raise ModelError(f"train_scale_jitter {jitter!r} must be [low, high] with 0 < low <= high")
    if not 16 <= kw["auto_min_short"] <= kw["auto_max_short"] or kw["auto_max_long"] < 16:
        raise ModelError("auto input size needs 16 <= auto_min_short <= auto_max_short and auto_max_long >= 16")
    _install_transform(model, InputSize("auto", kw["auto_min_short"], kw["auto_max_short"], kw["auto_max_long"]),
                       (kw["auto_min_short"],), tuple(jitter))


# ---------------------------------------------------------------- compact


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
    )
    layers = [tv_resnet.BasicBlock(in_channels, out_channels, stride, downsample)]
    layers += [tv_resnet.BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class DigitBackbone(nn.Module):
    """A narrow ResNet (BasicBlocks) sized for 100-400 px inputs and trained from scratch.

    Plain BatchNorm rather than torchvision's FrozenBatchNorm: frozen statistics only make
    sense for pretrained weights, and freezing them at init is why from-scratch ResNet
    detectors barely learn.
    """

    def __init__(self, widths: list[int], blocks: list[int]):
        super().__init__()
        if len(widths) != 5 or len(blocks) != 4:
            raise ModelError(f"widths needs 5 entries and blocks 4, got {widths} and {blocks}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.layer1 = _stage(widths[0], widths[1], blocks[0], 2)
        self.layer2 = _stage(widths[1], widths[2], blocks[1], 2)
        self.layer3 = _stage(widths[2], widths[3], blocks[2], 2)
        self.layer4 = _stage(widths[3], widths[4], blocks[3], 2)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            # Zero-init the last BN of each residual branch: every block starts as identity,
            # which makes from-scratch training markedly more stable.
            if isinstance(module, tv_resnet.BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # only used through IntermediateLayerGetter
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _digitnet_defaults() -> dict[str, Any]:
    # Sized by measurement on a 2-core CPU (bench/train_speed.py): ~20 training images/s.
    return dict(
        widths=[24, 32, 64, 128, 192],
        blocks=[1, 2, 2, 1],
        fpn_channels=64,
        representation_size=256,
        # torchvision's CPU roi_align backward is single-threaded: one sample per bin and
        # 32 sampled RoIs per image (house numbers have at most ~5 digits) keep it cheap.
        roi_sampling_ratio=1,
        # House-number crops are mostly digit: a ~112 px short side keeps small digits
        # readable and costs ~50x less than torchvision's 800. Training samples a size per
        # batch (scale augmentation); evaluation uses test_min_size.
        min_size=[96, 112, 128],
        test_min_size=112,
        max_size=400,
        anchor_sizes=[[12, 17], [24, 34], [48, 68], [96, 136]],
        aspect_ratios=[1.0, 1.7, 2.8],  # height / width: digits are upright, "1" is very thin
        rpn_pre_nms_top_n_train=600,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_train=300,
        rpn_post_nms_top_n_test=100,
        box_batch_size_per_image=32,
        box_detections_per_img=50,
        box_score_thresh=0.01,
        # Input size: "auto" sees each image near its own resolution (small crops enlarged to a
        # 128 px short side, photos reduced to a 512 px long side), so small numbers in large
        # images keep their pixels; "fixed" is torchvision's short side = test_min_size.
        size_policy="auto",
        auto_min_short=128,
        auto_max_short=384,
        auto_max_long=512,
        train_scale_jitter=[0.8, 1.25],
        # Digits under 40 px at that size (a plate in a photo, a number on padding) are read a
        # second time from a crop around the digits found with a score of at least 0.2 (pass 1 only
        # locates; chosen on synthetic validation: Task 2 0.703 at 0.2, 0.680 at 0.4).
        refine_below_px=40,
        refine_min_score=0.2,
        # Off unless a checkpoint asks for it (core.checkpoint export --follow-line): see RefinePolicy.follow.
        refine_follow=0.0,
        # Off unless a checkpoint asks for it (core.checkpoint export --look-closer): see CloserLook.
        closer_max_short=0,
        closer_max_long=0,
        closer_trigger=1.0,
        closer_min_score=1.0,
        closer_small_px=0.0,
        closer_follow=0.0,
        closer_locate=0.0,
        # One view unless a checkpoint asks for more (core.checkpoint export --views): see core.predict.fuse_views.
        view_scales=[1.0],
        view_fuse_iou=VIEW_FUSE_IOU,
        view_photos="once",
        crop_views="apart",
        line_heights="own",
    )


def _build_digitnet_fpn(kw: dict[str, Any], weights: str | None) -> tuple[nn.Module, str]:
    body = DigitBackbone(kw["widths"], kw["blocks"])
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=kw["widths"][2:],
        out_channels=kw["fpn_channels"],
        extra_blocks=LastLevelMaxPool(),
    )
    anchor_generator = _anchor_generator(kw)
    if len(kw["anchor_sizes"]) != 4:
        raise ModelError("digitnet_fpn has 4 feature levels: anchor_sizes needs 4 tuples")
    rpn_head = RPNHead(kw["fpn_channels"], anchor_generator.num_anchors_per_location()[0])
    roi_pool_size = 7
    box_roi_pool = MultiScaleRoIAlign(
        ["0", "1", "2", "3"], output_size=roi_pool_size, sampling_ratio=kw["roi_sampling_ratio"]
    )
    box_head = TwoMLPHead(kw["fpn_channels"] * roi_pool_size**2, kw["representation_size"])
    model = FasterRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchor_generator,
        rpn_head=rpn_head,
        box_roi_pool=box_roi_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(kw["representation_size"], kw["num_classes"]),
        rpn_batch_size_per_image=128,
        **_detector_kwargs(kw),
    )
    _install_input_size(model, kw)
    if weights not in (None, "auto", "none"):
        return model, _load_matching(model, weights, kw["arch"], f"weights from {weights}")
    return model, "digitnet_fpn has no published pretrained weights: training from scratch"


# Options that change only how a trained digitnet_fpn reads an image, never how it trains: core.checkpoint export
# --reading-of copies them from one checkpoint to another, so a fine-tune can read as the model it started from.
READING_OPTIONS = ("refine_below_px", "refine_min_score", "refine_follow", "closer_max_short", "closer_max_long",
                   "closer_trigger", "closer_min_score", "closer_small_px", "closer_follow", "closer_locate",
                   "view_scales", "view_fuse_iou", "view_photos", "crop_views", "line_heights")


def reading_options(model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's way of reading an image: its READING_OPTIONS, spelled out (defaults it predates filled in)."""
    options = complete_model_kwargs(model_kwargs)
    return {key: options[key] for key in READING_OPTIONS if key in options}


def digitnet_width(width: float) -> dict[str, Any]:
    """digitnet_fpn's channel counts at ``width`` times its default: the backbone's stages and the FPN, in
    multiples of 4 (the box head's 256-wide layers stay: what limits the model is what its features see)."""
    if not 0.25 <= width <= 4.0:
        raise ModelError(f"width={width!r}: digitnet_fpn's width must be between 0.25 and 4 times its default")
    defaults = _digitnet_defaults()

    def scaled(channels: int) -> int:
        return max(4, round(channels * width / 4) * 4)

    return {"widths": [scaled(c) for c in defaults["widths"]], "fpn_channels": scaled(defaults["fpn_channels"])}


def digitnet_width_of(payload: dict[str, Any]) -> float | None:
    """The width a digitnet_fpn checkpoint was built at (1 for the default channels; None for another architecture
    or channels of its own): the width it was grown to, else the one its training config asked for."""
    channels = _digitnet_channels(payload)
    return None if channels is None else _width_with(payload, channels)


def _width_with(payload: dict[str, Any], channels: dict[str, Any]) -> float | None:
    for width in (payload.get("grown_to_width"), (payload.get("config") or {}).get("width"), 1.0):
        if isinstance(width, (int, float)) and 0.25 <= width <= 4.0 and digitnet_width(width) == channels:
            return float(width)
    return None


def _digitnet_channels(payload: dict[str, Any]) -> dict[str, Any] | None:
    """A digitnet_fpn checkpoint's channels, as ``digitnet_width`` gives them (None for anything else, or options
    that cannot be)."""
    options = payload.get("model_kwargs")
    if payload.get("arch") != "digitnet_fpn" or not isinstance(options, dict):
        return None
    try:
        options = complete_model_kwargs({**options, "arch": "digitnet_fpn"})
    except ModelError:
        return None
    return {"widths": options["widths"], "fpn_channels": options["fpn_channels"]}


def check_weights_width(arch: str, width: float, weights: str | None) -> None:
    """Raise ModelError when ``weights`` is a digitnet_fpn checkpoint of other channels than ``width`` builds,
    naming the width to ask for; before a run starts, so a mismatch leaves no failed run behind."""
    if arch != "digitnet_fpn" or weights in (None, "auto", "none") or not os.path.isfile(weights):
        return
    try:
        payload = load_checkpoint(weights)
    except CheckpointError:
        return  # loading the weights names what is wrong with the file
    channels = _digitnet_channels(payload)
    if channels is None or channels == digitnet_width(width):  # the tensors fit, whatever width was asked for
        return
    has = _width_with(payload, channels)
    built = (f"width {has:g}" if has is not None
             else f"channels {channels['widths']} with an FPN of {channels['fpn_channels']}")
    grow = (f", or grow it to width {width:g} first: python -m core.checkpoint grow {weights} OUT.pt --width {width:g}"
            if has is not None and has < width else "")
    raise ModelError(f"{weights} is a digitnet_fpn of {built}, but this run builds width {width:g}"
                     + (f": set the model width to {has:g} (--width {has:g}){grow}" if has is not None else ""))


def check_weights_file(arch: str, weights: str | None, overrides: dict[str, Any] | None = None) -> None:
    """Raise ModelError when training could not start from ``weights`` (a missing or unreadable file, one with no
    weights of ``arch``, or too few that fit), naming the file and what it holds: the model is built from it as
    training builds it (0.3 s for the reference on a 2-core CPU), so the check cannot drift from the loading."""
    if weights not in (None, "auto", "none"):
        build_model(arch, overrides, weights)


def grow_state_dict(old: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``old``'s weights placed into a wider model's tensors (``fresh``: that model's own initial state),
    so the grown model computes exactly what ``old`` computed.

    Each weight's old outputs read its old inputs with their trained values and the new inputs with zeros, so
    no new channel reaches an old one. New channels keep ``fresh``'s random values: they are live from the
    first step, and the zero weights that read them get gradients at once (AdamW then moves them at the
    learning rate's own scale; Net2Net's copied channels would need noise to stop learning alike)."""
    unmatched = sorted(set(old) ^ set(fresh))
    if unmatched:
        raise ModelError(f"tensor {unmatched[0]!r} is in one model only ({len(unmatched)} in all): only the widths "
                         "of one architecture can grow")
    grown: dict[str, torch.Tensor] = {}
    for key, new in fresh.items():
        tensor = new.clone()
        src = old[key].to(new.dtype)
        if src.dim() != new.dim() or any(a > b for a, b in zip(src.shape, new.shape)) \
                or src.shape[2:] != new.shape[2:]:
            raise ModelError(f"{key}: {tuple(src.shape)} does not fit into {tuple(new.shape)}: a model grows, "
                             "it never shrinks")
        if src.dim() == 0:
            tensor = src.clone()
        elif src.dim() == 1:
            tensor[: src.shape[0]] = src
        else:
            outputs, inputs = src.shape[:2]
            tensor[:outputs] = 0
            tensor[:outputs, :inputs] = src
        grown[key] = tensor
    return grown


ARCHITECTURES: dict[str, ArchSpec] = {
    "fasterrcnn_resnet50_fpn_v2": ArchSpec(
        _build_resnet50_fpn_v2,
        _resnet50_defaults(),
        "Reference: torchvision Faster R-CNN ResNet-50 FPN v2 (COCO-pretrained when cached locally); for GPUs",
    ),
    "digitnet_fpn": ArchSpec(
        _build_digitnet_fpn,
        _digitnet_defaults(),
        "Compact: narrow ResNet + 4-level FPN, digit-shaped anchors, each image seen near its own size "
        "(short side 128-384, long side <= 512); trains on a 2-core CPU",
    ),
}


def resolve_model_kwargs(arch: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Full keyword set for ``arch``: its defaults, then ``overrides`` (unknown keys fail)."""
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    kwargs = dict(ARCHITECTURES[arch].defaults)
    num_classes = (overrides or {}).get("num_classes") or NUM_CLASSES
    if num_classes not in (NUM_CLASSES, WITH_LETTER_CLASS):
        raise ModelError(f"num_classes={num_classes!r}: a model reads {NUM_CLASSES} classes (background and "
                         f"digits) or {WITH_LETTER_CLASS} (and letters)")
    for key, value in (overrides or {}).items():
        if key in ("arch", "num_classes"):
            continue
        if key not in kwargs:
            raise ModelError(f"{arch} has no option {key!r}; options: {', '.join(sorted(kwargs))}")
        if value is not None:
            kwargs[key] = value
    explicit_size = any((overrides or {}).get(k) is not None for k in ("min_size", "max_size"))
    if "size_policy" in kwargs and explicit_size and (overrides or {}).get("size_policy") is None:
        kwargs["size_policy"] = "fixed"  # --min-size/--max-size ask for torchvision's fixed rule
    if "test_min_size" in kwargs and (overrides or {}).get("min_size") is not None \
            and (overrides or {}).get("test_min_size") is None:
        # A new training size range brings its own evaluation size: the middle of the range.
        sizes = kwargs["min_size"] if isinstance(kwargs["min_size"], list) else [kwargs["min_size"]]
        kwargs["test_min_size"] = sorted(sizes)[len(sizes) // 2]
    kwargs["arch"] = arch
    kwargs["num_classes"] = num_classes
    _check_kwargs(arch, kwargs)
    return kwargs


def _check_kwargs(arch: str, kwargs: dict[str, Any]) -> None:
    """Types and sane bounds: model kwargs also arrive from untrusted checkpoints, and a width of
    10**6 would allocate terabytes before any weight shape is compared."""
    defaults = ARCHITECTURES[arch].defaults

    def same_shape(value: Any, default: Any, key: str) -> None:
        if isinstance(default, bool) or default is None:
            return
        if isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 4096
            if isinstance(default, int) and key not in ("min_size",):
                ok = ok and isinstance(value, int)
            if not ok:
                raise ModelError(f"{arch} option {key}={value!r} is not a number in 0..4096")
        elif isinstance(default, list):
            items = value if isinstance(value, list) else [value] if key == "min_size" else None
            if items is None or not 1 <= len(items) <= 16:
                raise ModelError(f"{arch} option {key}={value!r} must be a list of 1 to 16 items")
            for item in items:
                same_shape(item, default[0], key)

    for key, default in defaults.items():
        same_shape(kwargs[key], default, key)


def build_model(
    arch: str, overrides: dict[str, Any] | None = None, weights: str | None = None
) -> tuple[nn.Module, dict[str, Any], str]:
    """Build ``arch``; returns (model, resolved kwargs to store in checkpoints, weights note).

    ``weights``: None/"auto" uses locally cached pretrained weights when the architecture has
    any (never downloads), "none" forces random init, anything else is a weights file.
    """
    kwargs = resolve_model_kwargs(arch, overrides)
    model, note = ARCHITECTURES[arch].builder(kwargs, weights)
    return model, kwargs, note


def complete_model_kwargs(model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's model kwargs with every option spelled out (what export records).

    Options a checkpoint predates take the value that reproduces how it was read then: a
    digitnet_fpn saved before the size policy existed read once, at its fixed test_min_size.
    """
    arch = model_kwargs.get("arch")
    overrides = {k: v for k, v in model_kwargs.items() if k != "arch"}
    if arch == "digitnet_fpn" and "size_policy" not in overrides:
        overrides.update(size_policy="fixed", refine_below_px=0)
    return resolve_model_kwargs(arch, overrides)


def rebuild_model(model_kwargs: dict[str, Any]) -> nn.Module:
    """Build the randomly initialised skeleton a checkpoint's state dict is loaded into."""
    kwargs = complete_model_kwargs(model_kwargs)
    model, _, _ = build_model(kwargs["arch"], kwargs, weights="none")
    return model


# Conv2d -> BatchNorm2d pairs a block's forward applies in turn, by attribute name: torchvision's ResNet blocks.
_BLOCK_CONV_BN_PAIRS = {
    tv_resnet.BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    tv_resnet.Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """``model`` in eval mode, made cheaper to run without changing what it finds: each BatchNorm that
    directly follows a convolution is folded into that convolution's weights, and the weights are stored
    channels-last, the layout oneDNN's CPU convolutions compute in (otherwise every convolution reorders
    its input and output). On a 2-core CPU the shipped model reads a dev-set image in 1.13-1.27x less time
    and scores move by about 1e-6 (README "Made cheap to run").

    Only pairs known to run in sequence are folded: neighbours in an ``nn.Sequential`` or in an
    ``IntermediateLayerGetter`` (a ResNet's stem), and torchvision's ResNet blocks. A module that applies
    a BatchNorm to something else is left alone. The result is for inference only: folded statistics can
    no longer be trained or saved as a checkpoint."""
    model.eval()
    with torch.no_grad():
        for module in list(model.modules()):
            for conv_name, bn_name in _conv_bn_pairs(module):
                conv, bn = getattr(module, conv_name), getattr(module, bn_name)
                if _foldable(conv, bn):
                    setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                    setattr(module, bn_name, nn.Identity())
    return model.to(memory_format=torch.channels_last)


def _conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """Child names that may be a Conv2d -> BatchNorm2d applied in turn: neighbours in a container whose forward
    applies its children in order, or a torchvision ResNet block's known pairs."""
    if isinstance(module, (nn.Sequential, IntermediateLayerGetter)):
        names = list(module._modules)
        return list(zip(names, names[1:]))
    return list(_BLOCK_CONV_BN_PAIRS.get(type(module), ()))


def _foldable(conv: Any, bn: Any) -> bool:
    return (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
            and bn.running_mean is not None and bn.num_features == conv.out_channels)
