"""The training configuration: one dataclass for the command line and the app.

``python -m core.train`` builds its argparse flags from the fields below (help text,
choices and bounds live in each field's metadata); the app's Train page builds its form
from the same fields and launches ``core.train`` with :meth:`TrainConfig.to_argv`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from core.model import ARCHITECTURES, ModelError, check_weights_file, check_weights_width, digitnet_width

SCHEDULERS = ("cosine", "step")
DEVICES = ("auto", "cpu", "cuda")
REFERENCE_ARCH = "fasterrcnn_resnet50_fpn_v2"
# Fields that may change when a run is resumed; everything else must match the saved run.
RESUMABLE_CHANGES = ("data", "out", "epochs", "device", "workers", "resume", "skip_invalid")


class ConfigError(ValueError):
    """A configuration value that is unknown or out of range; ``fields`` names the fields at fault."""

    def __init__(self, message: str, fields: list[str] | None = None):
        super().__init__(message)
        self.fields = fields or []


# Starting points for the Train page: the compact model on a CPU, the course's recipe on a GPU.
PRESETS: dict[str, dict[str, Any]] = {
    "CPU quick: digitnet_fpn": {"arch": "digitnet_fpn", "weights": "none", "lr": 1e-3, "batch_size": 16,
                                # 30 steps: a tenth of a run of 10 epochs of 10% of the page's 2,000-image set
                                "warmup_steps": 30, "clip_grad_norm": 10.0, "device": "cpu"},
    "GPU reference recipe": {"arch": REFERENCE_ARCH, "weights": "auto", "lr": 1e-4, "batch_size": 4,
                             "warmup_steps": 0, "clip_grad_norm": 0.0, "device": "cuda"},
}
# Training images/s on the 2-core CPU the README's figures come from (bench/train_speed.py); more
# cores scale it roughly linearly. GPUs vary too much to guess.
CPU_IMAGES_PER_S = {"digitnet_fpn": 18.0, REFERENCE_ARCH: 0.06}
CPU_REFERENCE_CORES = 2
LONG_RUN_S = 3600.0  # the Train page warns before launching anything longer
# Above this, a learning rate is a from-scratch one: on trained weights it undoes what they learnt (one epoch at 1e-3
# took the shipped model from validation mAP 0.650 to 0.541 on 200 images); the README's fine-tunes use 1e-4 to 2e-4.
FINE_TUNE_MAX_LR = 5e-4


def default_preset(cuda_available: bool) -> str:
    return "GPU reference recipe" if cuda_available else "CPU quick: digitnet_fpn"


def estimated_seconds(cfg: "TrainConfig", train_images: int, cuda_available: bool, cpu_count: int) -> float | None:
    """Rough training time on a CPU (None on a GPU or for an unknown architecture): the images drawn
    over all epochs at the measured speed, validation not counted."""
    on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not cuda_available)
    speed = CPU_IMAGES_PER_S.get(cfg.arch)
    if not on_cpu or speed is None:
        return None
    speed *= max(1, cpu_count) / CPU_REFERENCE_CORES
    if cfg.arch == "digitnet_fpn":
        speed /= cfg.width ** 1.3  # width 1.5 trained 1.7x slower on a 2-core CPU (16.8 against 9.9 images/s)
    return cfg.epochs * images_per_epoch(cfg, train_images) / speed


def images_per_epoch(cfg: "TrainConfig", train_images: int) -> int:
    """The size of each epoch's fresh subset (``core.batches.epoch_subset`` draws it)."""
    return max(1, int(round(train_images * cfg.subset_fraction)))


def optimisation_steps(cfg: "TrainConfig", train_images: int) -> int:
    """Optimisation steps of the whole run in one process: each epoch's fresh subset, in batches."""
    return cfg.epochs * math.ceil(images_per_epoch(cfg, train_images) / cfg.batch_size)


def _opt(help: str, *, label: str, choices=None, low=None, high=None, low_open=False, group="training", empty=None):
    meta = {"help": help, "group": group, "label": label}  # label: the app's name for it (the CLI's is the flag)
    if empty is not None:
        meta["empty"] = empty  # what leaving an optional value out means (the app's placeholder)
    if choices is not None:
        meta["choices"] = choices
    if low is not None:
        meta["low"] = low
        meta["low_open"] = low_open
    if high is not None:
        meta["high"] = high
    return meta


@dataclass
class TrainConfig:
    data: str = field(default="data/synth", metadata=_opt(
        "dataset folder: train/ and valid/ image folders with train.json and valid.json (COCO)",
        label="Data folder", group="run"))
    out: str = field(default="", metadata=_opt(
        "run folder to write (config.json, log.jsonl, history.json, best.pt, last.pt)", label="Run folder",
        group="run"))
    arch: str = field(default=REFERENCE_ARCH, metadata=_opt(
        "detector architecture: " + "; ".join(f"{k}: {v.summary}" for k, v in ARCHITECTURES.items()),
        label="Architecture", choices=tuple(ARCHITECTURES), group="model"))
    weights: str = field(default="auto", metadata=_opt(
        "pretrained weights: 'auto' uses torchvision's COCO weights when they are in the local torch hub "
        "cache (never downloads), 'none' trains from scratch, or a path to a weights file",
        label="Start from weights", group="model"))
    min_size: int | None = field(default=None, metadata=_opt(
        "fixed input short side in pixels for every image (default: the architecture's own: digitnet_fpn sees each "
        "image near its own size: small crops enlarged, large photos reduced; the reference uses 800)",
        label="Input short side (px)", low=16, high=2000, group="model", empty="architecture default"))
    max_size: int | None = field(default=None, metadata=_opt(
        "input long-side cap in pixels (default: the architecture's own; 1333 for the reference)",
        label="Input long side cap (px)", low=16, high=4000, group="model", empty="architecture default"))
    width: float = field(default=1.0, metadata=_opt(
        "digitnet_fpn only: channels of the backbone and FPN as a multiple of the default (1.5: 1.5x as wide, "
        "about 1.4x the CPU time per image read and 1.7x per training image); start it from a trained model with "
        "python -m core.checkpoint grow",
        label="Model width (digitnet_fpn)", low=0.25, high=4.0, group="model"))
    scheduler: str = field(default="cosine", metadata=_opt(
        "learning-rate schedule, stepped once per epoch: 'cosine' = CosineAnnealingLR, 'step' = StepLR",
        label="Scheduler", choices=SCHEDULERS))
    epochs: int = field(default=10, metadata=_opt("number of epochs", label="Epochs", low=1, high=100000))
    lr: float = field(default=1e-4, metadata=_opt(
        "AdamW learning rate", label="Learning rate", low=0.0, low_open=True, high=10.0))
    weight_decay: float = field(default=5e-4, metadata=_opt(
        "AdamW weight decay", label="Weight decay", low=0.0, high=10.0))
    subset_fraction: float = field(default=0.1, metadata=_opt(
        "fraction of the training set drawn afresh (at random) for each epoch",
        label="Share of training set per epoch", low=0.0, low_open=True, high=1.0))
    batch_size: int = field(default=4, metadata=_opt(
        "images per optimisation step (per process)", label="Batch size", low=1, high=4096))
    t_max: int | None = field(default=None, metadata=_opt(
        "CosineAnnealingLR T_max in epochs (default: --epochs)", label="Cosine period T_max (epochs)",
        low=1, high=100000, empty="= epochs"))
    eta_min: float = field(default=1e-6, metadata=_opt(
        "CosineAnnealingLR eta_min", label="Final learning rate (eta_min)", low=0.0, high=10.0))
    step_size: int = field(default=1, metadata=_opt(
        "StepLR step_size in epochs", label="Step every (epochs)", low=1, high=100000))
    gamma: float = field(default=0.7, metadata=_opt(
        "StepLR gamma", label="Step factor (gamma)", low=0.0, low_open=True, high=1.0))
    warmup_steps: int = field(default=0, metadata=_opt(
        "linear learning-rate warm-up over the first N optimisation steps (0 = none, as in the reference)",
        label="Warm-up steps", low=0, high=10**7))
    clip_grad_norm: float = field(default=0.0, metadata=_opt(
        "clip the gradient norm to this value (0 = no clipping)", label="Gradient clipping (max norm)",
        low=0.0, high=1e6))
    device: str = field(default="auto", metadata=_opt(
        "'auto' uses CUDA when present, else the CPU", label="Device", choices=DEVICES, group="run"))
    amp: bool = field(default=True, metadata=_opt(
        "mixed precision on CUDA (ignored on the CPU)", label="Mixed precision (CUDA)", group="run"))
    workers: int = field(default=-1, metadata=_opt(
        "data-loading processes (-1 = automatic: 0 on the CPU, 4 on CUDA)", label="Data-loading processes",
        low=-1, high=64, group="run"))
    seed: int = field(default=0, metadata=_opt(
        "random seed: per-epoch subsets, augmentation and initialisation", label="Random seed",
        low=0, high=2**31 - 1))
    skip_invalid: bool = field(default=False, metadata=_opt(
        "train on the valid part of a dataset with bad annotations instead of stopping",
        label="Skip bad annotations", group="run"))
    resume: bool = field(default=False, metadata=_opt(
        "continue the run in --out from its last.pt at the next epoch", label="Resume", group="run"))

    # -------------------------------------------------------------- checks

    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming every bad value; returns self so calls can be chained."""
        problems: list[tuple[str, str]] = []  # (field, what is wrong with it)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if value is None:
                continue
            if "choices" in meta and value not in meta["choices"]:
                problems.append((f.name, f"{f.name}={value!r} is not one of {', '.join(meta['choices'])}"))
            if isinstance(value, float) and not math.isfinite(value):
                problems.append((f.name, f"{f.name}={value!r} must be a finite number"))
                continue
            if "low" in meta and isinstance(value, (int, float)) and not isinstance(value, bool):
                low, high = meta["low"], meta.get("high")
                if value < low or (meta.get("low_open") and value == low):
                    relation = ">" if meta.get("low_open") else ">="
                    problems.append((f.name, f"{f.name}={value!r} must be {relation} {low}"))
                if high is not None and value > high:
                    problems.append((f.name, f"{f.name}={value!r} must be <= {high}"))
        if not problems and self.width != 1.0 and self.arch != "digitnet_fpn":
            problems.append(("width", f"width={self.width!r} applies to digitnet_fpn only, not {self.arch}"))
        if not problems and self.eta_min > self.lr:
            problems.append(("eta_min", f"eta_min={self.eta_min!r} must not exceed lr={self.lr!r} "
                                        "(the schedule only anneals down)"))
        if problems:
            raise ConfigError("invalid training configuration: " + "; ".join(text for _, text in problems),
                              fields=list(dict.fromkeys(name for name, _ in problems)))
        return self

    # -------------------------------------------------------------- conversion

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from plain data (a checkpoint, the app's form); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
        converted = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                converted[f.name] = _coerce(f, values[f.name])
        return cls(**converted).validate()

    def to_argv(self) -> list[str]:
        """Arguments for ``python -m core.train`` that reproduce this configuration exactly."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            flag = cli_flag(f)
            if _base_type(f) is bool:
                if value != f.default:
                    argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
            elif value is not None:
                argv += [flag, repr(value) if isinstance(value, float) else str(value)]
        return argv

    def check_weights(self) -> "TrainConfig":
        """Raise ConfigError when training could not start from --weights: a digitnet_fpn checkpoint of another width
        than this config builds (naming the width to set), a missing or unreadable file, one that is no checkpoint or
        state dict of this architecture. Reads the file: the form and the trainer call it before a run folder is
        made."""
        try:
            check_weights_width(self.arch, self.width, self.weights)
        except ModelError as exc:
            raise ConfigError(str(exc), fields=["width", "weights"]) from None
        try:
            check_weights_file(self.arch, self.weights, self.model_overrides())
        except ModelError as exc:
            raise ConfigError(str(exc), fields=["weights"]) from None
        return self

    def check_data(self) -> "TrainConfig":
        """Raise ConfigError when the data folder is not there: a mistyped path is the likely cause, so it says that
        before offering to generate data (the app calls it before it launches a run)."""
        if os.path.isfile(self.data):
            raise ConfigError(f"{self.data} is a file: name the dataset folder (train/ with train.json, valid/ "
                              "with valid.json)", fields=["data"])
        if not os.path.isdir(self.data):
            raise ConfigError(f"no folder at {self.data}: check the path, or generate a synthetic dataset there",
                              fields=["data"])
        return self

    @property
    def fine_tunes(self) -> bool:
        """--weights names a file: the run starts from trained weights rather than from scratch (or "auto")."""
        return self.weights not in ("auto", "none") and os.path.isfile(self.weights)

    def fine_tune_lr_note(self) -> str | None:
        """The note for a from-scratch learning rate on trained weights (not an error: it may be meant), else None.
        A resumed run goes on from its own last.pt, whatever it started from."""
        if self.resume or self.lr <= FINE_TUNE_MAX_LR or not self.fine_tunes:
            return None
        return (f"learning rate {self.lr:g} is one to train from scratch: on the weights of {self.weights} it can undo "
                f"what they learnt (one epoch at 1e-3 took the shipped model from mAP 0.650 to 0.541). Fine-tuning "
                f"usually takes 1e-4 to 2e-4 (--lr 1e-4); above {FINE_TUNE_MAX_LR:g} is rarely what you want.")

    def model_overrides(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {"min_size": self.min_size, "max_size": self.max_size}
        if self.width != 1.0:
            overrides.update(digitnet_width(self.width))
        return overrides


def _base_type(f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(TrainConfig)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    kind = _base_type(f)
    if value is None:
        if f.default is None:
            return None
        raise ConfigError(f"{f.name} must not be empty", fields=[f.name])
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{f.name}={value!r} is not a valid {kind.__name__}", fields=[f.name]) from None


def cli_flag(f: dataclasses.Field) -> str:
    """The command-line flag of a config field (``lr`` -> ``--lr``, ``batch_size`` -> ``--batch-size``)."""
    return "--" + f.name.replace("_", "-")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each default shown, except where there is none to show (None, or a help that names its
    own default): "(default: None)" after "(default: the checkpoint's reader)" reads as a contradiction."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser(prog: str = "python -m core.train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a Faster R-CNN digit detector (defaults: the course's reference recipe).",
        formatter_class=HelpFormatter,
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        group = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        flag = cli_flag(f)
        kind = _base_type(f)
        kwargs: dict[str, Any] = {"help": meta["help"], "default": f.default, "dest": f.name}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if "choices" in meta:
                kwargs["choices"] = meta["choices"]
        if f.name == "out":
            kwargs.update(required=True, default=argparse.SUPPRESS, help=meta["help"] + " (required)")
        group.add_argument(flag, **kwargs)
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, set[str]]:
    """Parse the command line; returns the config and the names of the flags given explicitly."""
    parser = build_parser()
    args = parser.parse_args(argv)
    explicit = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kwargs = {"dest": action.dest}
            if isinstance(action, argparse.BooleanOptionalAction):
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["nargs"] = action.nargs
            explicit.add_argument(*action.option_strings, **kwargs)
    given, _ = explicit.parse_known_args(argv)
    try:
        config = TrainConfig(**vars(args)).validate()
    except ConfigError as exc:
        parser.error(str(exc))
    note = config.fine_tune_lr_note()
    if note:  # what the Train page warns before it launches such a run
        print(f"core.train: note: {note}", file=sys.stderr, flush=True)
    return config, set(vars(given))
