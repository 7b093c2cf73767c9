"""Self-describing checkpoints: tensors and plain data only, written atomically.

A checkpoint holds everything inference needs to rebuild its model (``arch``,
``model_kwargs``, ``class_names``) and what a person needs to trust it (``config``,
``epoch``, ``metrics``, ``history``, ``data``). ``torch.load(path, weights_only=True)``
reads it, so a checkpoint from a stranger cannot run code.
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
from typing import Any

import torch

from core import failpoints
from core.outputs import check_new_file

FORMAT = "digit-studio-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "arch", "model_kwargs", "class_names", "model")


class CheckpointError(ValueError):
    """A file that is not a usable Digit Studio checkpoint; the message says why."""


def atomic_write_bytes(path: str, writer) -> None:
    """Write via ``writer(file)`` to a temporary file beside ``path`` (its folder made if missing), fsync, then
    rename.

    Readers see the old file or the new one, never half of one, even if the process is
    killed mid-write; a failed write leaves the previous file untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide checkpoints from other users
        with os.fdopen(fd, "wb") as handle:
            writer(failpoints.wrap_writes(handle, f"writing:{os.path.basename(path)}"))
            handle.flush()
            os.fsync(handle.fileno())
        failpoints.reached(f"write:{os.path.basename(path)}")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")))


def save_checkpoint(path: str, payload: dict[str, Any], half: bool = False) -> None:
    """Save atomically; ``half`` stores float weights as float16 (loading restores float32)."""
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder: name the file to write, e.g. {os.path.join(path, 'model.pt')}")
    payload = dict(payload)
    payload.setdefault("format", FORMAT)
    payload.setdefault("format_version", FORMAT_VERSION)
    if half:
        payload["model"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["model"].items()}
        payload["weights_dtype"] = "float16"
    atomic_write_bytes(path, lambda handle: torch.save(payload, handle))


def remove_stale_temporaries(directory: str) -> list[str]:
    """Delete temporary files that a killed writer left behind (call only while holding the run lock)."""
    removed = []
    for name in os.listdir(directory):
        if name.startswith(".") and name.endswith(".tmp"):
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def safe_torch_load(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` with every failure turned into a CheckpointError
    that says why: a file that would run code is refused, anything else is unreadable."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything but tensors and plain containers. A reference to a
        # Python global (a class or function to call) means a full-pickle file that could run
        # code when loaded; anything else means bytes that are not a PyTorch file at all.
        detail = str(exc).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
        if "GLOBAL" in str(exc) or "global" in detail.lower() or "class" in detail.lower():
            raise CheckpointError(
                f"{path}: refused: the file contains Python objects other than tensors and plain data, "
                f"so loading it could run code ({detail[:200]})") from None
        raise CheckpointError(f"{path}: unreadable checkpoint, truncated or not a PyTorch file ({detail[:200]})") from None
    except Exception as exc:  # noqa: BLE001 - torch's unpickler raises IndexError, struct.error... on garbage
        raise CheckpointError(
            f"{path}: unreadable checkpoint, truncated or not a PyTorch file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read and check a checkpoint; float16-stored weights come back as float32."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    payload = safe_torch_load(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a Digit Studio checkpoint (no '{FORMAT}' header); train one with python -m core.train")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing {', '.join(missing)}")
    if not isinstance(payload["model"], dict) or not all(isinstance(v, torch.Tensor) for v in payload["model"].values()):
        raise CheckpointError(f"{path}: checkpoint weights are not a state dict of tensors")
    if payload.get("weights_dtype") == "float16":
        payload["model"] = {k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()}
    return payload


def is_checkpoint_file(path: str) -> bool:
    """Whether ``path`` holds a Digit Studio checkpoint, from its header alone: the tensors are mapped, not read,
    so a picker can sort many files quickly. ``load_checkpoint`` still checks the file whole."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any file torch cannot read safely is no checkpoint
        return False
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def describe(payload: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's metadata without any tensors (for display and JSON)."""
    keep = ("arch", "model_kwargs", "class_names", "config", "epoch", "metrics", "best", "data",
            "created", "commands", "weights_note", "versions", "format_version", "task2_threshold", "task2_reader",
            "task2_reader_picked_on", "exported_from", "exported", "evaluations", "weights_dtype", "averaged_from",
            "grown_to_width")
    return {k: payload[k] for k in keep if k in payload}


def export(src: str, out: str, half: bool = True, task2_threshold: float | None = None,
           metrics_json: str | None = None, task2_reader: dict[str, Any] | None = None,
           look_closer: tuple[int, int, float, float, float, float, float] | None = None,
           views: tuple[float, ...] | None = None, view_photos: str | None = None,
           line_heights: str | None = None, follow_line: float | None = None,
           crop_views: str | None = None, reading_of: str | None = None,
           task2_gap: float | None = None, photo_reader: str | None = None) -> dict[str, Any]:
    """Write a deployable copy of ``src``: inference-only, optionally float16, with extra metadata.
    ``task2_reader`` (a ``NumberReader.as_dict()``) replaces any plain ``task2_threshold``;
    ``look_closer`` (max short side, max long side, trigger, min score, small px, follow heights, locating score;
    long side 0: off) sets
    the model's closer look (``core.model.CloserLook``); ``views`` the multiples of its input size at
    which it reads each image (``(1.0,)``: once; ``core.predict.fuse_views``); ``view_photos`` how
    those views read an image its input size reduces ("once" or "confirm", ``core.model.VIEW_PHOTOS``);
    ``line_heights`` whether the digits of the number read share one box height ("own" or "shared",
    ``core.model.LINE_HEIGHTS``); ``follow_line`` how many digit heights a second-pass crop grows where the
    number read in it runs to its edge (0: never; ``core.model.RefinePolicy.follow``); ``crop_views`` whether a
    second-pass crop's views are read apart or in one batch ("apart" or "batched", ``core.model.CROP_VIEWS``);
    ``reading_of`` a checkpoint of the same architecture whose way of reading (``core.model.READING_OPTIONS``) the
    copy takes first, before any of the options above; ``task2_gap`` the gap score (``NumberReader.gap``) added to
    the reader recorded: ``task2_reader``, else the plain ``task2_threshold`` (which has no line, so is refused), else
    ``src``'s own; ``photo_reader`` the scores photos are read with (``NumberReader.photos``: a reader as text, or
    "same"), set on that same reader."""
    import datetime

    from core.model import complete_model_kwargs

    payload = load_checkpoint(src)
    for key in ("optimizer", "scheduler", "scaler"):
        payload.pop(key, None)
    # Every option written out, inference-time ones included (input size, second pass): the copy
    # reads images the same way whatever the defaults of a later version of the code.
    payload["model_kwargs"] = complete_model_kwargs(payload["model_kwargs"])
    if reading_of is not None:
        _read_as(payload, reading_of)
    _set_reading(payload, look_closer, views, view_photos, line_heights, crop_views, follow_line)
    # An export of an export (a new inference option on the shipped file) names the training checkpoint the
    # weights came from, not the copy in between.
    payload["exported_from"] = payload.get("exported_from") or os.path.abspath(src)
    payload["exported"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    _set_task2_reader(payload, task2_threshold, task2_reader, task2_gap, photo_reader)
    if metrics_json:
        _add_evaluation(payload, metrics_json)
    save_checkpoint(out, payload, half=half)
    return describe(payload)


def _set_reading(payload: dict[str, Any], look_closer, views, view_photos, line_heights, crop_views,
                 follow_line) -> None:
    """export's options for how the model reads an image, each checked by building the model; None keeps one."""
    if look_closer is not None:
        keys = ("closer_max_short", "closer_max_long", "closer_trigger", "closer_min_score", "closer_small_px",
                "closer_follow", "closer_locate")
        _set_model_options(payload, dict(zip(keys, look_closer)), "--look-closer")
    for flag, key, value in (("--views", "view_scales", None if views is None else [float(v) for v in views]),
                             ("--view-photos", "view_photos", view_photos),
                             ("--line-heights", "line_heights", line_heights),
                             ("--crop-views", "crop_views", crop_views),
                             ("--follow-line", "refine_follow", None if follow_line is None else float(follow_line))):
        if value is not None:
            _set_model_options(payload, {key: value}, flag)


def _set_task2_reader(payload: dict[str, Any], threshold: float | None, reader: dict[str, Any] | None,
                      gap: float | None, photo_reader: str | None = None) -> None:
    """export's Task 2 reader: a plain ``threshold``, or ``reader``, either with ``gap`` and ``photo_reader``
    (``core.predict.adjusted_reader``) applied; what is not given keeps the source's."""
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"--task2-threshold {threshold} must be a score between 0 and 1")
        payload["task2_threshold"] = float(threshold)
        payload.pop("task2_reader", None)
    if reader is None and gap is None and photo_reader is None:
        return
    from core.predict import NumberReader, adjusted_reader  # predict imports this module

    base = NumberReader.from_dict(reader) if reader is not None else \
        NumberReader.plain(threshold) if threshold is not None else NumberReader.from_meta(payload)
    recorded = adjusted_reader(base, photo_reader, gap).as_dict()
    if recorded != payload.get("task2_reader"):  # where training picked its own reader says nothing of this one
        payload.pop("task2_reader_picked_on", None)
    payload["task2_reader"] = recorded
    payload.pop("task2_threshold", None)


def _add_evaluation(payload: dict[str, Any], metrics_json: str) -> None:
    """Record the headline figures of a ``core.evaluate --json`` file in the copy's ``evaluations``."""
    import json

    with open(metrics_json, encoding="utf-8") as handle:
        try:
            extra = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--metrics-json {metrics_json}: not JSON ({exc})") from None
    if not isinstance(extra, dict) or not isinstance(extra.get("mAP"), (int, float)):
        raise ValueError(f"--metrics-json {metrics_json}: no mAP in it; pass what python -m core.evaluate --json "
                         "writes")
    keep = ("mAP", "AP50", "AP75", "task2_accuracy", "task2_threshold", "task2_reader", "images", "split", "data",
            "per_class_AP")
    payload.setdefault("evaluations", []).append({k: extra[k] for k in keep if k in extra})


def _read_as(payload: dict[str, Any], other_path: str) -> None:
    """``payload`` made to read images as the checkpoint at ``other_path`` does (its READING_OPTIONS)."""
    from core.model import reading_options

    other = load_checkpoint(other_path)
    if other.get("arch") != payload.get("arch"):
        raise CheckpointError(f"--reading-of {other_path}: a {other.get('arch')} checkpoint reads a "
                              f"{payload.get('arch')} model's images in no way of its own")
    _set_model_options(payload, reading_options(other["model_kwargs"]), "--reading-of")


def _set_model_options(payload: dict[str, Any], options: dict[str, Any], flag: str) -> None:
    """Inference-time model options, checked by building the model before anything is written."""
    from core.model import ModelError, rebuild_model

    payload["model_kwargs"] = {**payload["model_kwargs"], **options}
    try:
        rebuild_model(payload["model_kwargs"])
    except ModelError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def _off_or(text: str, off: Any, parse, usage: str) -> Any:
    """An export option's value: ``off`` for "off", else ``parse(text)``; a clear error naming ``usage``."""
    if text == "off":
        return off
    try:
        return parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {usage}, or off") from None


def _views_option(text: str) -> tuple[float, ...]:
    return _off_or(text, (1.0,), lambda t: tuple(float(part) for part in t.split(",")),
                   "a list of multiples of the input size such as 0.8,1,1.25")


def _look_closer_values(text: str) -> tuple[int, int, float, float, float, float, float]:
    parts = text.split(",")
    if not 5 <= len(parts) <= 7:
        raise ValueError(text)
    follow, locate = (float(p) for p in (parts[5:] + ["0", "0"])[:2])
    return int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3]), float(parts[4]), follow, locate


def _look_closer_option(text: str) -> tuple[int, int, float, float, float, float, float]:
    return _off_or(text, (0, 0, 1.0, 1.0, 0.0, 0.0, 0.0), _look_closer_values,
                   "SHORT,LONG,TRIGGER,MIN,SMALL_PX[,FOLLOW[,LOCATE]] such as 640,896,0.85,0.98,10,2")


def _follow_line(text: str) -> float:
    return _off_or(text, 0.0, float, "a number of digit heights such as 2")


def _check_one_model(sources: list[str], payloads: list[dict[str, Any]]) -> None:
    """Raise CheckpointError unless every payload is the first one's model (architecture, options, tensors).
    How a source reads an image (READING_OPTIONS) may differ: a fine-tune and the exported model it started from
    are one model read two ways."""
    from core.model import READING_OPTIONS, complete_model_kwargs

    def model_options(payload: dict[str, Any]) -> dict[str, Any]:
        options = complete_model_kwargs(payload["model_kwargs"])
        return {k: v for k, v in options.items() if k not in READING_OPTIONS}

    first = payloads[0]
    shapes = {k: tuple(v.shape) for k, v in first["model"].items()}
    theirs = model_options(first)
    for path, payload in zip(sources[1:], payloads[1:]):
        mine = model_options(payload)
        differ = {k: (mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs))
                  if mine.get(k) != theirs.get(k)}
        for key in ("arch", "class_names"):
            if payload[key] != first[key]:
                differ = {key: (payload[key], first[key])}
        if differ:
            said = "; ".join(f"{k} {a!r} (not {b!r})" for k, (a, b) in differ.items())
            raise CheckpointError(f"{path} differs from {sources[0]} in {said}: only checkpoints of one model can be "
                                  "averaged")
        if {k: tuple(v.shape) for k, v in payload["model"].items()} != shapes:
            raise CheckpointError(f"{path}: its tensors differ from {sources[0]}'s in names or shapes")


def _readings_differ(payloads: list[dict[str, Any]]) -> bool:
    from core.model import reading_options

    return any(reading_options(p["model_kwargs"]) != reading_options(payloads[0]["model_kwargs"]) for p in payloads)


def _mean_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    merged = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            merged[key] = (sum(state[key].float() for state in states) / len(states)).to(value.dtype)
        else:  # counters (BatchNorm's num_batches_tracked): the largest
            merged[key] = max((state[key] for state in states), key=lambda t: int(t.max()))
    return merged


# What a checkpoint records of its own weights' training, scores and copies: a file whose weights are new (an
# average, a grown model) drops it.
OF_THESE_WEIGHTS = ("optimizer", "scheduler", "scaler", "metrics", "best", "history", "global_step", "evaluations",
                    "weights_dtype", "exported_from", "exported")


def average(sources: list[str], out: str) -> dict[str, Any]:
    """Write the uniform weight average of ``sources`` (a "model soup", Wortsman et al. 2022; SWA
    along one run). Fine-tunes of one model lie in one basin: their average often scores better
    than any of them, and it smooths the run-to-run noise that synthetic validation cannot tell
    apart. BatchNorm statistics are averaged like the weights. The result has no metrics or reader
    of its own: score it on a validation split (``core.evaluate --sweep-task2``) and export it with
    the reader found there."""
    if len(sources) < 2:
        raise ValueError("average needs at least two checkpoints")
    payloads = [load_checkpoint(path) for path in sources]
    _check_one_model(sources, payloads)
    # What described one source's training or reading does not describe the average.
    drop = (*OF_THESE_WEIGHTS, "task2_threshold", "task2_reader", "task2_reader_picked_on")
    payload = {k: v for k, v in payloads[0].items() if k not in drop}
    payload["model"] = _mean_weights([p["model"] for p in payloads])
    payload["averaged_from"] = [{"path": os.path.abspath(path), "epoch": p.get("epoch"), "best": p.get("best")}
                                for path, p in zip(sources, payloads)]
    payload["weights_note"] = f"uniform average of {len(sources)} checkpoints (averaged_from)"
    lineage = [str(c) for p in payloads for c in p.get("commands", [])]  # every source's recipe, once each
    this = "python -m core.checkpoint average " + " ".join([*sources, "--out", out])
    payload["commands"] = [*dict.fromkeys(lineage), this]
    save_checkpoint(out, payload)
    meta = describe(payload)
    if _readings_differ(payloads):
        meta["reading_note"] = f"reads images as {sources[0]} does (its sources read them in different ways)"
    return meta


def grow(src: str, out: str, width: float) -> dict[str, Any]:
    """Write ``src`` (a digitnet_fpn checkpoint) as a model ``width`` times as wide that reads exactly as ``src``
    does (``core.model.grow_state_dict``), to train on with ``core.train --weights OUT --width WIDTH``: the new
    channels start where the trained model stopped instead of from nothing."""
    from core.model import build_model, complete_model_kwargs, digitnet_width, digitnet_width_of, grow_state_dict

    payload = load_checkpoint(src)
    if payload["arch"] != "digitnet_fpn":
        raise CheckpointError(f"{src}: a {payload['arch']} checkpoint; only digitnet_fpn's width can grow")
    has = digitnet_width_of(payload)
    if has is not None and width <= has:
        raise CheckpointError(f"{src} is already width {has:g}: it can grow to a larger width only, not {width:g}")
    options = complete_model_kwargs(payload["model_kwargs"])
    options.update(digitnet_width(width))
    torch.manual_seed(0)  # the new channels' random start, the same on every run
    model, options, _ = build_model("digitnet_fpn", options, weights="none")
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()}
    grown = {k: v for k, v in payload.items() if k not in (*OF_THESE_WEIGHTS, "averaged_from", "config")}
    grown.update(model=grow_state_dict(state, model.state_dict()), model_kwargs=options, grown_to_width=width,
                 weights_note=f"{src} grown to width {width:g} (new channels read by zero weights)")
    this = f"python -m core.checkpoint grow {src} {out} --width {width:g}"
    grown["commands"] = [*[str(c) for c in payload.get("commands", [])], this]
    save_checkpoint(out, grown)
    return describe(grown)


def _parser() -> argparse.ArgumentParser:
    from core.predict import add_reader_arguments  # predict imports this module

    parser = argparse.ArgumentParser(prog="python -m core.checkpoint",
                                     description="Inspect a checkpoint, or export a deployable copy of one.")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print a checkpoint's metadata as JSON")
    show.add_argument("path")
    exp = sub.add_parser("export", help="write an inference-only (optionally float16) copy")
    exp.add_argument("src", help="checkpoint to export, e.g. runs/NAME/best.pt")
    exp.add_argument("out", help="where to write it, e.g. checkpoints/default.pt")
    exp.add_argument("--float32", action="store_true", help="keep float32 weights (default: float16 storage)")
    exp.add_argument("--force", action="store_true", help="replace OUT when it exists (never the file exported)")
    add_reader_arguments(exp, "Task 2 reader to record: the line of digits around one scoring >= ANCHOR, its "
                              "neighbours >= MEMBER, a number of one digit >= SINGLE (core.evaluate --sweep-task2 "
                              "on valid prints the best ANCHOR,MEMBER)",
                         "plain Task 2 threshold to record instead (every digit scoring at least this)")
    exp.add_argument("--metrics-json", default=None, help="core.evaluate --json output to record (e.g. test split)")
    exp.add_argument("--reading-of", default=None, metavar="CKPT",
                     help="read images as CKPT does (a checkpoint of the same architecture, e.g. "
                          "checkpoints/default.pt for a fine-tune of it): its second pass, closer look, views and line "
                          "heights, before any of the options below; the Task 2 reader stays this checkpoint's own")
    exp.add_argument("--look-closer", type=_look_closer_option, default=None,
                     metavar="SHORT,LONG,TRIGGER,MIN,SMALL_PX[,FOLLOW[,LOCATE]]|off",
                     help="read a large photo in which no digit scored TRIGGER again with its short side up to "
                          "SHORT and long side up to LONG px, keeping that read when a digit there scores MIN and "
                          "was under SMALL_PX tall at the first size; FOLLOW (default 0: never): there, a crop whose "
                          "number runs to its side grows FOLLOW digit heights that way and is read again; LOCATE "
                          "(default 0: as the first look): the score at which a digit found there locates a number "
                          "to read again from its crop (e.g. 640,896,0.85,0.98,10,2; 'off' removes it)")
    exp.add_argument("--views", type=_views_option, default=None, metavar="SCALES|off",
                     help="read each image at these multiples of its input size and fuse what the views find box "
                          "by box (e.g. 0.8,1,1.25; 1 must be among them; 'off' reads once)")
    exp.add_argument("--view-photos", default=None, metavar="once|confirm",
                     help="how the views read an image the input size reduces (a photo): 'once' locates the number "
                          "at one size and reads it at every view; 'confirm' also reads a photo whose surest digit "
                          "stands alone again, located and read at every view, and fuses those readings")
    exp.add_argument("--crop-views", default=None, metavar="apart|batched",
                     help="'batched': a second-pass crop's views are read in one forward pass, padded to the "
                          "largest (faster on a CPU; the smaller views' scores can move); 'apart': one pass each")
    exp.add_argument("--line-heights", default=None, metavar="own|shared",
                     help="'shared': the digits of the number read share their median box height, each keeping "
                          "its centre, as SVHN's annotators boxed a number; 'own': each digit's box as found")
    exp.add_argument("--follow-line", default=None, metavar="HEIGHTS|off", type=_follow_line,
                     help="a second-pass crop whose number runs to its left or right side grows this many digit "
                          "heights that way and is read again, so digits the first pass missed at the end of a "
                          "number are read (e.g. 2; 'off' never)")
    grw = sub.add_parser("grow", help="write a digitnet_fpn checkpoint as a wider model that reads exactly as it "
                                      "does, to train further (core.train --weights OUT --width WIDTH)")
    grw.add_argument("src", help="digitnet_fpn checkpoint, e.g. checkpoints/default.pt")
    grw.add_argument("out", help="where to write the wider model, e.g. runs/wide-start.pt")
    grw.add_argument("--width", type=float, required=True,
                     help="channels of the backbone and FPN as a multiple of digitnet_fpn's default (e.g. 1.5)")
    grw.add_argument("--force", action="store_true", help="replace OUT when it exists (never SRC)")
    avg = sub.add_parser("average", help="write the weight average of checkpoints of one model (a model soup)")
    avg.add_argument("sources", nargs="+", help="two or more checkpoints of the same architecture and options")
    avg.add_argument("--out", required=True, help="where to write the average, e.g. runs/soup/best.pt")
    avg.add_argument("--force", action="store_true", help="replace --out when it exists (never one of the sources)")
    return parser


def main(argv: list[str] | None = None) -> int:
    import json
    import sys

    from core.predict import NumberReader, parse_reader  # predict imports this module

    args = _parser().parse_args(argv)
    try:
        if args.command != "show":
            sources = tuple(args.sources) if args.command == "average" else (args.src,)
            check_new_file(args.out, "--out" if args.command == "average" else "OUT", sources, args.force)
        if args.command == "show":
            print(json.dumps(describe(load_checkpoint(args.path)), indent=1, default=str))
        elif args.command == "grow":
            grow(args.src, args.out, args.width)
            print(f"wrote {args.out}: {args.src} at width {args.width:g}; train it with python -m core.train "
                  f"--arch digitnet_fpn --width {args.width:g} --weights {args.out} ...")
        elif args.command == "average":
            meta = average(args.sources, args.out)
            print(f"wrote {args.out}: the average of {len(args.sources)} checkpoints")
            if "reading_note" in meta:
                print(f"It {meta['reading_note']}. To read as another does, first: python -m core.checkpoint export "
                      f"{args.out} READ.pt --reading-of THAT.pt, and go on with READ.pt.")
            print(f"Next, pick its Task 2 reader on a validation split: python -m core.evaluate --ckpt {args.out} "
                  f"--data DATA --split valid --sweep-task2; then record it: python -m core.checkpoint export "
                  f"{args.out} FINAL.pt --task2-reader ANCHOR,MEMBER")
        else:
            reader = parse_reader(args.task2_reader).as_dict() if args.task2_reader else None
            meta = export(args.src, args.out, half=not args.float32, task2_threshold=args.task2_threshold,
                          metrics_json=args.metrics_json, task2_reader=reader, look_closer=args.look_closer,
                          views=args.views, view_photos=args.view_photos, line_heights=args.line_heights,
                          follow_line=args.follow_line, crop_views=args.crop_views, reading_of=args.reading_of,
                          task2_gap=args.task2_gap, photo_reader=args.photo_reader)
            size = os.path.getsize(args.out) / 1e6
            print(f"wrote {args.out} ({size:.1f} MB, {meta['arch']}, epoch {meta.get('epoch')})")
            print(f"Task 2 reader recorded: {NumberReader.from_meta(meta).describe()}")
    except BrokenPipeError:  # `show ... | head` closed the pipe: what was read is all that was wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 0
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"core.checkpoint: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
