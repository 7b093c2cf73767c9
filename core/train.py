"""Train a digit detector: ``python -m core.train --data DIR --out RUN_DIR [flags]``.

Defaults are the course's reference recipe: fasterrcnn_resnet50_fpn_v2, AdamW (lr 1e-4,
weight decay 5e-4), 10 epochs, each on a fresh random 10% of the training set,
CosineAnnealingLR (T_max = epochs, eta_min 1e-6) or StepLR (step 1, gamma 0.7), COCO mAP
on the validation split after every epoch, best model kept.

Multi-GPU: ``torchrun --nproc_per_node=N -m core.train ...`` (DistributedDataParallel;
every rank draws the same subset and takes its shard; rank 0 evaluates, logs and saves).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import shlex
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torchvision

from core import failpoints
from core.batches import DigitDataset, collate, epoch_batches, train_transforms
from core.checkpoint import (CheckpointError, atomic_write_text, load_checkpoint, remove_stale_temporaries,
                             save_checkpoint)
from core.config import (LONG_RUN_S, RESUMABLE_CHANGES, ConfigError, TrainConfig, estimated_seconds, images_per_epoch,
                         parse_args)
from core.data import DatasetError, Problem, Split, load_split
from core.evaluate import detect_split, score_detections
from core.events import EventLog, ProgressBar
from core.model import (NUM_CLASSES, WITH_LETTER_CLASS, ModelError, build_model, class_names, complete_model_kwargs,
                        input_size_of, reading_options, rebuild_model)
from core.runs import RunBusyError, RunLock

LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")


class NonFiniteLossError(RuntimeError):
    pass


class TrainingError(RuntimeError):
    """A problem found before or during training, reported as an ``error`` event."""


@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it after every step and stops at a safe point."""

    requested: bool = False
    signal_name: str = ""

    def install(self) -> None:
        def handler(signum, _frame):
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop right now
            self.requested = True
            self.signal_name = signal.Signals(signum).name
            # A step of the reference on a CPU takes a minute: say at once that the stop is under way.
            print(f"core.train: {self.signal_name}: stopping after the current step (a second Ctrl-C stops at once; "
                  "last.pt keeps the last finished epoch)", file=sys.stderr, flush=True)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on any rank (stop requests, bad losses)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def mean(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        if not self.enabled:
            return values
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return {k: float(v) / self.world_size for k, v in zip(keys, tensor.tolist())}


def init_distributed(device_name: str) -> Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        # Before any collective: NCCL puts its buffers on the current device, one GPU per rank.
        torch.cuda.set_device(local_rank)
    # Rank 0 evaluates alone while the others wait in a collective: allow for long evaluations.
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)


def resolve_device(name: str, dist_info: Distributed) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for but PyTorch sees no CUDA GPU")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", dist_info.local_rank if dist_info.enabled else torch.cuda.current_device())
    return torch.device("cpu")


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch, as in the reference recipe."""
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.t_max or cfg.epochs,
                                                          eta_min=cfg.eta_min)
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    raise ConfigError(f"unknown scheduler {cfg.scheduler!r}")


def retarget_cosine(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.CosineAnnealingLR,
                    t_max: int) -> None:
    """Stretch a cosine schedule to a new length when a run is extended with --resume --epochs.

    torch steps CosineAnnealingLR recursively from the current lr, which is eta_min at the
    end of a finished schedule; the lr must be reset to the closed form for the new length.
    """
    scheduler.T_max = t_max
    epoch = scheduler.last_epoch
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Augmentation randomness for one epoch: reproducible on resume, distinct per rank."""
    torch.manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)


def _warm_up(optimizer: torch.optim.Optimizer, scheduled: list[float], global_step: int, warmup_steps: int) -> None:
    """The first ``warmup_steps`` steps of a run ramp the learning rate up linearly to the scheduled one."""
    if warmup_steps and global_step < warmup_steps:
        factor = (global_step + 1) / warmup_steps
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr * factor


def _checked_loss(loss_dict: dict[str, torch.Tensor], epoch: int, step: int, dist_info: Distributed,
                  device: torch.device) -> tuple[torch.Tensor, float]:
    """The summed loss and its value; every rank stops together on a non-finite one."""
    loss = sum(loss_dict.values())
    loss_value = float(loss.detach())
    if dist_info.any(not math.isfinite(loss_value), device):
        terms = {k: float(v.detach()) for k, v in loss_dict.items()}
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, step {step}: {loss_value} ({terms}); try a lower --lr "
            f"or --clip-grad-norm")
    return loss, loss_value


def _optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, scaler,
                    clip_grad_norm: float | None) -> None:
    """Backward and step, through the AMP scaler when one is enabled (gradients unscaled before clipping)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        if clip_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        return
    loss.backward()
    if clip_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()


def train_one_epoch(model, optimizer, loader, device, *, epoch: int, global_step: int, cfg: TrainConfig,
                    scaler, dist_info: Distributed, stop: StopFlag, log: EventLog | None,
                    bar: ProgressBar | None) -> dict[str, Any]:
    """One pass over this epoch's batches; returns mean losses, counts and whether it stopped."""
    model.train()
    use_amp = scaler is not None and scaler.is_enabled()
    scheduled = [group["lr"] for group in optimizer.param_groups]
    sums = {k: 0.0 for k in ("loss",) + LOSS_TERMS}
    steps = images = 0
    total = len(loader)
    started = last_event = time.perf_counter()
    stopped = False
    for step, (batch_images, targets) in enumerate(loader, start=1):
        _warm_up(optimizer, scheduled, global_step, cfg.warmup_steps)
        batch_images = [im.to(device, non_blocking=True) for im in batch_images]
        targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            loss_dict = model(batch_images, targets)
        loss, loss_value = _checked_loss(loss_dict, epoch, step, dist_info, device)
        _optimizer_step(model, optimizer, loss, scaler, cfg.clip_grad_norm)
        global_step += 1
        steps += 1
        failpoints.reached("step")
        images += len(batch_images) * dist_info.world_size
        sums["loss"] += loss_value
        for k in LOSS_TERMS:
            sums[k] += float(loss_dict[k].detach()) if k in loss_dict else 0.0
        now = time.perf_counter()
        rate = images / max(now - started, 1e-9)
        if bar is not None:
            bar.update(step, f"loss {sums['loss'] / steps:.4f}  {rate:.1f} img/s")
        if log is not None and (now - last_event >= 1.0 or step == total):
            last_event = now
            log.emit("progress", epoch=epoch, step=step, total=total, loss=round(sums["loss"] / steps, 5),
                     images_per_s=round(rate, 2), lr=optimizer.param_groups[0]["lr"])
        if dist_info.any(stop.requested, device):
            stopped = True
            break
    for group, lr in zip(optimizer.param_groups, scheduled):
        group["lr"] = lr  # the epoch scheduler continues from the scheduled value, not the warm-up one
    means = dist_info.mean({k: v / max(steps, 1) for k, v in sums.items()}, device)
    return {"losses": means, "steps": steps, "images": images, "global_step": global_step,
            "train_seconds": time.perf_counter() - started, "stopped": stopped}


def _versions() -> dict[str, str]:
    return {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__), "python": sys.version.split()[0]}


def _dataset_info(root: str) -> dict[str, Any]:
    info: dict[str, Any] = {"root": os.path.abspath(root)}
    manifest = os.path.join(root, "synth.json")
    if os.path.exists(manifest):
        try:
            with open(manifest, encoding="utf-8") as handle:
                synth = json.load(handle)
            # The box convention, the mix of negatives and the faint strokes change what a model learns as much as
            # the version does.
            keys = ("generator", "version", "seed", "counts", "command", "boxes", "negatives", "letter_boxes",
                    "faint_strokes")
            info["synth"] = {k: synth[k] for k in keys if k in synth}
            info["synth"]["fonts"] = len(synth.get("fonts", []))
        except (OSError, ValueError):
            pass
    return info


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable), "-m", "core.train"] + sys.argv[1:])


def _weights_commands(weights: str) -> list[str]:
    """The ``commands`` of a Digit Studio checkpoint used as --weights ([] for anything else)."""
    if weights in ("auto", "none") or not os.path.isfile(weights):
        return []
    try:
        commands = load_checkpoint(weights).get("commands")
    except CheckpointError:
        return []  # a plain state dict: no recipe to inherit
    return [str(c) for c in commands] if isinstance(commands, list) else []


def _resumed_commands(state: dict[str, Any], weights: str) -> list[str]:
    """The commands a resumed run saved; a run saved before runs inherited their weights' recipe
    gets it now (read from the weights file as it is today)."""
    commands = [str(c) for c in state.get("commands", [])]
    if state.get("inherits_commands"):
        return commands
    lineage = _weights_commands(weights)
    return commands if commands[:len(lineage)] == lineage else lineage + commands


def _inside(path: Any, folder: str) -> bool:
    if not isinstance(path, (str, bytes, os.PathLike)) or not folder:
        return False
    path, folder = os.path.abspath(os.fsdecode(path)), os.path.abspath(folder)
    return os.path.commonpath([path, folder]) == folder


def _check_out_dir(cfg: TrainConfig) -> None:
    out = cfg.out
    if not out:
        raise TrainingError("--out (the run folder) is required")
    if os.path.exists(out) and not os.path.isdir(out):
        raise TrainingError(f"--out {out} exists and is not a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise TrainingError(f"cannot create run folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise TrainingError(f"run folder {out} is not writable")


def _resume_config(cfg: TrainConfig, explicit: set[str]) -> tuple[TrainConfig, dict[str, Any]]:
    last_path = os.path.join(cfg.out, "last.pt")
    if not os.path.exists(last_path):
        saved_path = os.path.join(cfg.out, "config.json")
        if not os.path.exists(saved_path):
            raise TrainingError(f"--resume: {last_path} does not exist; nothing to resume (drop --resume to start)")
        # The run died before finishing its first epoch: start it again with its own settings.
        with open(saved_path, encoding="utf-8") as handle:
            saved = TrainConfig.from_dict({**json.load(handle), "out": cfg.out, "resume": True})
        return _merge_resumed(cfg, saved, explicit), None
    try:
        state = load_checkpoint(last_path)
    except CheckpointError as exc:
        raise TrainingError(f"--resume: {exc}") from None
    if "optimizer" not in state:
        raise TrainingError(f"--resume: {last_path} has no optimizer state (is it a best.pt copy?)")
    merged = _merge_resumed(cfg, TrainConfig.from_dict(state["config"]), explicit)
    # A run that ended before writing its report resumes to write it; one with its report has nothing left to do.
    if state.get("epoch", 0) >= merged.epochs and os.path.isfile(os.path.join(cfg.out, "report", "metrics.json")):
        raise TrainingError(f"--resume: {cfg.out} has finished all {merged.epochs} epoch(s); --epochs N (more than "
                            f"{merged.epochs}) trains it further")
    return merged, state


def _merge_resumed(cfg: TrainConfig, saved: TrainConfig, explicit: set[str]) -> TrainConfig:
    """The saved run's settings, with the few that may change on resume taken from the command line."""
    conflicts = [name for name in sorted(explicit) if name not in RESUMABLE_CHANGES
                 and getattr(cfg, name) != getattr(saved, name)]
    if conflicts:
        raise TrainingError(
            "--resume keeps the run's saved settings; these flags differ from them: "
            + ", ".join(f"--{n.replace('_', '-')} {getattr(cfg, n)!r} (saved {getattr(saved, n)!r})" for n in conflicts))
    merged = saved.to_dict()
    for name in RESUMABLE_CHANGES:
        if name in explicit or name in ("out", "resume"):
            merged[name] = getattr(cfg, name)
    return TrainConfig.from_dict(merged)


def run(cfg: TrainConfig, explicit: set[str] | None = None, stop: StopFlag | None = None,
        stream=sys.stdout) -> int:
    """Train as configured; returns the process exit code (0 done, 130 stopped, 1 error, 2 bad input)."""
    explicit = explicit if explicit is not None else set()
    stop = stop or StopFlag()
    dist_info = init_distributed(cfg.device)
    is_main = dist_info.is_main
    lock: RunLock | None = None
    log: EventLog | None = None
    started = time.perf_counter()
    made_here = is_main and not os.path.exists(cfg.out)
    remove_folder = False
    try:
        state = None
        if is_main:
            if not cfg.resume:  # a resumed run builds the model its last.pt records
                cfg.check_weights()
            _check_out_dir(cfg)
            lock = RunLock(cfg.out).acquire()
            cfg, state, log = _open_run(cfg, explicit, stream)
        if dist_info.enabled:
            cfg, state = _share_config(cfg, state, dist_info)
        return _train(cfg, state, dist_info, stop, log, stream, started)
    except (TrainingError, ConfigError, DatasetError, RunBusyError, CheckpointError, ModelError) as exc:
        message = str(exc)
        refused = log is not None and _refused_resume(cfg, log)
        if log is not None:
            log.emit("refused" if refused else "error", message=message, kind=type(exc).__name__)
        where = f" (rank {dist_info.rank})" if dist_info.enabled else ""
        kept = f" ({cfg.out} is as it was: its checkpoints and history are untouched)" if refused else ""
        # A run refused before it trained leaves no folder behind when it made that folder itself.
        remove_folder = made_here and os.path.isdir(cfg.out) and (log is None or "start" not in log.emitted)
        kept = kept or (f" ({cfg.out}, made for this run, is removed)" if remove_folder else "")
        print(f"core.train{where}: error: {message}{kept}", file=sys.stderr, flush=True)
        return 2
    except NonFiniteLossError as exc:
        if log is not None:
            log.emit("error", message=str(exc), kind="NonFiniteLoss")
        print(f"core.train: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("core.train: stopped at once (a second Ctrl-C); last.pt holds the last finished epoch",
              file=sys.stderr, flush=True)
        if log is not None:
            log.emit("end", status="stopped", message="interrupted twice: stopped immediately",
                     seconds=round(time.perf_counter() - started, 2))
        return 130
    except Exception as exc:  # noqa: BLE001 - any crash must reach the log as an error event
        message = _crash_message(exc, cfg.out)
        if log is not None:
            log.emit("error", message=message, kind=type(exc).__name__)
        traceback.print_exc()
        return 1
    finally:
        if log is not None:
            log.close()
        if lock is not None:
            lock.release()
        if remove_folder:
            shutil.rmtree(cfg.out, ignore_errors=True)
        if dist_info.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _refused_resume(cfg: TrainConfig, log: EventLog) -> bool:
    """A resume of a run with saved epochs that bad input stopped before it trained: the run is what it was
    (completed, stopped), not failed, so its log says "refused" rather than "error"."""
    return cfg.resume and "start" not in log.emitted and os.path.exists(os.path.join(cfg.out, "last.pt"))


def _open_run(cfg: TrainConfig, explicit: set[str], stream) -> tuple[TrainConfig, dict[str, Any] | None, EventLog]:
    """The run folder made ready by the main rank (its lock held): the config to train with (a resumed
    run's own), the state to resume from, and the event log."""
    remove_stale_temporaries(cfg.out)  # from a writer killed mid-write; the real files are intact
    state = None
    if cfg.resume:
        cfg, state = _resume_config(cfg, explicit)
    else:
        existing = [n for n in ("last.pt", "best.pt", "history.json") if os.path.exists(os.path.join(cfg.out, n))]
        if existing:
            raise TrainingError(f"{cfg.out} already holds a run ({', '.join(existing)}); "
                                f"use --resume to continue it or choose a new --out")
    try:
        if state is None:  # a resumed run's config.json changes only once it trains (_announce): see _refused_resume
            _write_config(cfg)
        return cfg, state, EventLog(os.path.join(cfg.out, "log.jsonl"), stream)
    except OSError as exc:
        raise TrainingError(f"cannot write to run folder {cfg.out}: {exc.strerror or exc}") from None


def _write_config(cfg: TrainConfig) -> None:
    atomic_write_text(os.path.join(cfg.out, "config.json"), json.dumps(cfg.to_dict(), indent=1))


def _share_config(cfg: TrainConfig, state: dict[str, Any] | None, dist_info: Distributed
                  ) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Every rank gets the main rank's resolved config (resume may have replaced it) and, when
    resuming, reads the state itself."""
    holder = [(cfg.to_dict(), state is not None) if dist_info.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    config_dict, resuming = holder[0]
    cfg = TrainConfig.from_dict(config_dict)
    if not dist_info.is_main and resuming:
        state = load_checkpoint(os.path.join(cfg.out, "last.pt"))
    return cfg, state


def _crash_message(exc: Exception, out: str) -> str:
    """An unexpected error in words; a failed write in the run folder says the saved checkpoints are intact."""
    if isinstance(exc, OSError) and exc.errno is not None and _inside(exc.filename, out):
        return f"cannot write run files ({exc.strerror}: {exc.filename}); saved checkpoints are intact"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)
    return f"{type(exc).__name__}: {exc}"


def _validate(model: torch.nn.Module, valid_split, device: torch.device, cfg: TrainConfig, stop: StopFlag,
              epoch: int) -> tuple[dict[str, Any] | None, list | None]:
    """Validation metrics and detections of one epoch; (None, None) when a stop interrupts it."""
    bar = ProgressBar(len(valid_split.records), f"  validate {epoch}", sys.stderr)
    started = time.perf_counter()
    try:
        detections = detect_split(model, valid_split, device, batch_size=max(cfg.batch_size, 8),
                                  progress=lambda done, _total: (bar.update(done), failpoints.reached("eval")),
                                  should_stop=lambda: stop.requested)
    except InterruptedError:
        return None, None
    metrics = score_detections(valid_split, detections)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    return metrics, detections


def _save_epoch(out: str, payload: dict[str, Any], is_best: bool, resume_state: dict[str, Any]) -> None:
    # best.pt before last.pt: if the process dies between the two, resuming from the
    # older last.pt redoes this epoch and rewrites the same best.pt.
    if is_best:
        save_checkpoint(os.path.join(out, "best.pt"), payload)
    save_checkpoint(os.path.join(out, "last.pt"), {**payload, **resume_state})
    atomic_write_text(os.path.join(out, "history.json"), json.dumps(payload["history"], indent=1))


def _write_best_report(cfg: TrainConfig, model: torch.nn.Module, valid_split, device: torch.device,
                       detections: list | None, say) -> None:
    """The error analysis of the best epoch on the validation split, in ``out/report/``, so every
    finished run can be compared afterwards, and the Task 2 reader that split picks, recorded in
    best.pt so the run reads numbers as well as its validation says it can. A best epoch from an
    earlier (resumed) session is read again from best.pt."""
    from core.report import build_report, write_report

    best_path = os.path.join(cfg.out, "best.pt")
    payload = load_checkpoint(best_path)  # read once: for its weights when needed, and to record the reader
    if detections is None:
        model.load_state_dict(payload["model"])
        detections = detect_split(model, valid_split, device, batch_size=max(cfg.batch_size, 8))
    report = build_report(valid_split, detections, None, extra={"split": "valid", "data": cfg.data,
                                                                "checkpoint": best_path})
    write_report(report, os.path.join(cfg.out, "report"))
    payload["task2_reader"] = report.metrics["task2_reader"]
    payload["task2_reader_picked_on"] = {"split": "valid", "images": report.metrics["images"],
                                         "crops_with_number": report.metrics["task2_pick_crops"],
                                         "task2_accuracy": report.metrics["task2_accuracy"]}
    save_checkpoint(best_path, payload)
    reader = report.reader
    say(f"core.train: report of the best epoch on valid in {os.path.join(cfg.out, 'report')}/; Task 2 reader picked "
        f"on valid ({report.metrics['task2_accuracy']:.3f} there; crops on the {report.metrics['task2_pick_crops']} "
        f"that hold a number), recorded in best.pt: {reader.describe()}")
    hint = _reading_hint(cfg, payload["model_kwargs"])
    if hint:
        say(hint)


def _reading_hint(cfg: TrainConfig, model_kwargs: dict[str, Any]) -> str | None:
    """How to make best.pt read as the --weights checkpoint does, when that one reads images otherwise (more
    views, a closer look: the shipped model): a run trains and validates with its architecture's own reading."""
    if cfg.arch != "digitnet_fpn" or not os.path.isfile(cfg.weights):
        return None
    try:
        theirs = reading_options(load_checkpoint(cfg.weights)["model_kwargs"])
    except (CheckpointError, ModelError, KeyError, TypeError):
        return None
    if theirs == reading_options(model_kwargs):
        return None
    best, copy = os.path.join(cfg.out, "best.pt"), os.path.join(cfg.out, "read-as-weights.pt")
    return (f"core.train: best.pt reads images with this run's own settings, not as {cfg.weights} does (its views, "
            f"closer look or line heights); to read as it does: python -m core.checkpoint export {best} {copy} "
            f"--reading-of {cfg.weights}. Its Task 2 reader was picked for one view: pick it again for the copy, "
            f"python -m core.evaluate --ckpt {copy} --data {cfg.data} --split valid --sweep-task2, and record it with "
            f"python -m core.checkpoint export {copy} FINAL.pt --task2-reader ANCHOR,MEMBER")


def _stop_message(stop: StopFlag, out: str) -> str:
    # The Train page's Stop and Ctrl-C both arrive as signals: say "on request", name the signal after.
    by = "stopped on request" + (f" ({stop.signal_name})" if stop.signal_name else "")
    if os.path.exists(os.path.join(out, "last.pt")):
        return f"{by}; last.pt holds the last finished epoch"
    return f"{by} before any epoch finished; nothing was saved"


def _load_splits(cfg: TrainConfig, is_main: bool, say) -> tuple[Split, Split]:
    # Every rank checks the image files itself: with --skip-invalid all ranks must drop the same
    # images to draw the same subsets, and without it all must stop with the same report.
    train_split = load_split(cfg.data, "train", skip_invalid=cfg.skip_invalid)  # its own problems are said first
    if not os.path.isdir(os.path.join(cfg.data, "valid")):
        raise DatasetError([Problem(os.path.join(cfg.data, "valid"), "image folder valid/ not found: training scores "
                                    "every epoch on it to keep the best; python -m core.convert ... --valid-fraction "
                                    "0.1 carves one out of the training images")], f"cannot use dataset {cfg.data}")
    valid_split = load_split(cfg.data, "valid", skip_invalid=cfg.skip_invalid)
    if not any(r.boxes for r in valid_split.records):
        raise DatasetError([Problem(os.path.join(cfg.data, "valid.json"), "the validation split has no digit boxes")],
                           "cannot compute validation mAP")
    if is_main and (train_split.dropped or valid_split.dropped):
        say(f"--skip-invalid: dropped {train_split.dropped} training and {valid_split.dropped} validation "
            f"image(s) with problems ({len(train_split.problems) + len(valid_split.problems)} problem(s); "
            f"first: {(train_split.problems + valid_split.problems)[0]})")
    warnings = train_split.warnings + valid_split.warnings
    if is_main and warnings:
        say(f"{len(warnings)} warning(s) about the data, trained on as it is (python -m core.data {cfg.data} lists "
            f"them all); first: {warnings[0]}")
    return train_split, valid_split


@dataclass
class _Progress:
    """What an epoch adds to and a resumed run restores: history, best epoch, where to go on."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "mAP": -1.0})
    start_epoch: int = 1
    global_step: int = 0
    best_detections: list | None = None  # the best epoch's validation detections, when it ran in this process

    def add_epoch(self, record: dict[str, Any], metrics: dict[str, Any], detections) -> bool:
        """Adds a finished epoch; True when it is the best so far (by validation mAP)."""
        self.history.append(record)
        if self.best["epoch"] is not None and metrics["mAP"] <= self.best["mAP"]:
            return False
        self.best = {"epoch": record["epoch"], "mAP": metrics["mAP"], "AP50": metrics["AP50"],
                     "AP75": metrics["AP75"], "task2_accuracy": metrics["task2_accuracy"]}
        self.best_detections = detections
        return True


def _build_model(cfg: TrainConfig, state: dict[str, Any] | None, device: torch.device, letters: bool):
    """(model, its kwargs, weights note), new or as the resumed checkpoint saved it. ``letters``: the
    training data boxes letters, so the model gets a letter class (a digits-only --weights file grows one)."""
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    if state is None:
        overrides = {**cfg.model_overrides(), "num_classes": WITH_LETTER_CLASS if letters else NUM_CLASSES}
        model, model_kwargs, weights_note = build_model(cfg.arch, overrides, cfg.weights)
    else:
        # The saved kwargs, not the config's: they record choices made at build time (frozen layers).
        model_kwargs = complete_model_kwargs(state["model_kwargs"])
        model = rebuild_model(model_kwargs)
        model.load_state_dict(state["model"])
        weights_note = state.get("weights_note", "")
    # Channels-last is the layout oneDNN's CPU convolutions compute in: without it every convolution reorders
    # its input and output, and a 2-core CPU training step takes about 1.3x as long (README "Made cheap to run").
    return model.to(device, memory_format=torch.channels_last), model_kwargs, weights_note


def _lay_out_like_params(optimizer: torch.optim.Optimizer) -> None:
    """Each per-parameter state tensor (Adam's moments) in its parameter's memory layout. A checkpoint saved
    before training went channels-last holds them contiguous, and on CUDA a mixed layout sends every step to
    the optimizer's slow one-tensor-at-a-time path."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _restore(cfg: TrainConfig, state: dict[str, Any], optimizer, scheduler, scaler, is_main: bool, say) -> _Progress:
    """Optimizer, schedule and scaler state of a resumed run, and where its epochs go on."""
    optimizer.load_state_dict(state["optimizer"])
    _lay_out_like_params(optimizer)
    scheduler.load_state_dict(state["scheduler"])
    if cfg.scheduler == "cosine" and cfg.t_max is None and scheduler.T_max != cfg.epochs:
        retarget_cosine(optimizer, scheduler, cfg.epochs)
        say(f"--epochs {cfg.epochs}: the cosine schedule now anneals over {cfg.epochs} epochs; "
            f"lr for epoch {int(state['epoch']) + 1} is {optimizer.param_groups[0]['lr']:.3g}")
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    progress = _Progress(history=list(state.get("history", [])), best=dict(state.get("best", _Progress().best)),
                         start_epoch=int(state["epoch"]) + 1, global_step=int(state.get("global_step", 0)))
    if is_main:
        # history.json may lag last.pt if a run died between the two writes: last.pt wins.
        atomic_write_text(os.path.join(cfg.out, "history.json"), json.dumps(progress.history, indent=1))
    return progress


def _epoch_record(epoch: int, lr: float, result: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """One epoch's line in history.json and its ``epoch`` event."""
    return {
        "epoch": epoch, "lr": lr, **{k: round(v, 6) for k, v in result["losses"].items()},
        "mAP": metrics["mAP"], "AP50": metrics["AP50"], "AP75": metrics["AP75"],
        "task2_accuracy": metrics["task2_accuracy"], "images": result["images"],
        "train_seconds": round(result["train_seconds"], 2), "eval_seconds": metrics["seconds"],
        "seconds": round(result["train_seconds"] + metrics["seconds"], 2),
        "images_per_s": round(result["images"] / max(result["train_seconds"], 1e-9), 2),
    }


def _say_epoch(say, record: dict[str, Any], epochs: int, is_best: bool) -> None:
    terms = "  ".join(f"{k.replace('loss_', '')} {record[k]:.4f}" for k in LOSS_TERMS)
    say(f"epoch {record['epoch']}/{epochs}  lr {record['lr']:.3g}  loss {record['loss']:.4f} ({terms})  "
        f"mAP {record['mAP']:.4f}  AP50 {record['AP50']:.4f}  AP75 {record['AP75']:.4f}  "
        f"task2 {record['task2_accuracy']:.3f}  {record['images_per_s']:.1f} img/s  "
        f"train {record['train_seconds']:.0f}s eval {record['eval_seconds']:.0f}s" + ("  *best*" if is_best else ""))


def _train(cfg: TrainConfig, state: dict[str, Any] | None, dist_info: Distributed, stop: StopFlag,
           log: EventLog | None, stream, started: float) -> int:
    is_main = dist_info.is_main
    say = log.say if log is not None else (lambda _text: None)
    device = resolve_device(cfg.device, dist_info)
    if device.type == "cpu" and dist_info.enabled:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist_info.world_size))
    train_split, valid_split = _load_splits(cfg, is_main, say)
    model, model_kwargs, weights_note = _build_model(cfg, state, device, train_split.has_letters)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp) if device.type == "cuda" else None
    progress = _Progress() if state is None else _restore(cfg, state, optimizer, scheduler, scaler, is_main, say)
    train_model = model
    if dist_info.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    dataset = DigitDataset(train_split.records, train_transforms())
    policy = input_size_of(model)
    batch_keys = dataset.batch_keys(lambda h, w: policy.padded_size(h, w, model.transform.size_divisible))
    workers = cfg.workers if cfg.workers >= 0 else (4 if device.type == "cuda" else 0)
    per_epoch = images_per_epoch(cfg, len(dataset))
    if log is not None:
        _announce(cfg, log, state is not None, progress, device, dist_info, use_amp, train_split, valid_split,
                  per_epoch, weights_note, model_kwargs)
    run_meta = _run_meta(cfg, state, model_kwargs, weights_note, train_split, valid_split)

    status = "completed"
    for epoch in range(progress.start_epoch, cfg.epochs + 1):
        if dist_info.any(stop.requested, device):
            status = "stopped"
            break
        seed_epoch(cfg.seed, epoch, dist_info.rank)
        loader = _epoch_loader(dataset, batch_keys, cfg, epoch, dist_info, workers, device)
        lr = optimizer.param_groups[0]["lr"]
        bar = ProgressBar(len(loader), f"epoch {epoch}/{cfg.epochs}", sys.stderr) if is_main else None
        result = train_one_epoch(train_model, optimizer, loader, device, epoch=epoch,
                                 global_step=progress.global_step, cfg=cfg, scaler=scaler, dist_info=dist_info,
                                 stop=stop, log=log, bar=bar)
        if result["stopped"]:
            status = "stopped"
            break
        progress.global_step = result["global_step"]

        metrics, detections = _validate(model, valid_split, device, cfg, stop, epoch) if is_main else (None, None)
        if dist_info.any(metrics is None and is_main, device):
            status = "stopped"
            break
        scheduler.step()
        if not is_main:
            continue

        record = _epoch_record(epoch, lr, result, metrics)
        is_best = progress.add_epoch(record, metrics, detections)
        payload = {
            **run_meta, "epoch": epoch, "metrics": {**record, "per_class_AP": metrics["per_class_AP"]},
            "history": progress.history, "best": progress.best,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "global_step": progress.global_step, "model": model.state_dict(),
        }
        _save_epoch(cfg.out, payload, is_best, _resume_state(optimizer, scheduler, scaler))
        log.emit("epoch", **record)
        _say_epoch(say, record, cfg.epochs, is_best)
        if is_best:
            log.emit("best", epoch=epoch, mAP=metrics["mAP"], path=os.path.join(cfg.out, "best.pt"))
    return _finish(cfg, status, progress, model, valid_split, device, is_main, log, say, stop, started)


def _run_meta(cfg: TrainConfig, state: dict[str, Any] | None, model_kwargs: dict[str, Any], weights_note: str,
              train_split: Split, valid_split: Split) -> dict[str, Any]:
    """What every epoch's checkpoint says about the run, besides the epoch itself. A run that starts
    from one of our checkpoints inherits its commands: the list stays the whole recipe from nothing
    to this model."""
    commands = (_weights_commands(cfg.weights) if state is None else _resumed_commands(state, cfg.weights)) \
        + [_command_line()]
    return {
        "arch": cfg.arch, "model_kwargs": model_kwargs, "class_names": class_names(model_kwargs["num_classes"]),
        "config": cfg.to_dict(),
        "data": {**_dataset_info(cfg.data), "train_images": len(train_split.records),
                 "valid_images": len(valid_split.records)},
        "commands": commands, "inherits_commands": True, "weights_note": weights_note, "versions": _versions(),
    }


def _epoch_loader(dataset: DigitDataset, batch_keys, cfg: TrainConfig, epoch: int, dist_info: Distributed,
                  workers: int, device: torch.device) -> torch.utils.data.DataLoader:
    """This epoch's fresh subset of the training set, in batches of images the model sees at one size."""
    batches = epoch_batches(batch_keys, cfg.subset_fraction, cfg.batch_size, cfg.seed, epoch,
                            dist_info.rank, dist_info.world_size)
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                                       pin_memory=device.type == "cuda", persistent_workers=False)


def _resume_state(optimizer: torch.optim.Optimizer, scheduler, scaler) -> dict[str, Any]:
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {}}


# Below this many images an epoch drawn from a subset is likely a small dataset under the recipe's 10% default.
FEW_IMAGES_PER_EPOCH = 100


def _announce(cfg: TrainConfig, log: EventLog, resumed: bool, progress: _Progress, device, dist_info: Distributed,
              use_amp: bool, train_split, valid_split, per_epoch: int, weights_note: str, model_kwargs: dict) -> None:
    """The run's "start" event (a resumed run's config.json now takes the flags it was resumed with), and its
    readable line."""
    if resumed:
        _write_config(cfg)
    log.emit("start", resumed=resumed, start_epoch=progress.start_epoch, epochs=cfg.epochs,
             arch=cfg.arch, device=str(device), world_size=dist_info.world_size, amp=use_amp,
             train_images=len(train_split.records), valid_images=len(valid_split.records),
             images_per_epoch=per_epoch, dropped=train_split.dropped + valid_split.dropped,
             weights_note=weights_note, config=cfg.to_dict(), model_kwargs=model_kwargs)
    # A resumed run goes on from its own last epoch; how its weights began would read as if it started over.
    weights = (f"weights of epoch {progress.start_epoch - 1} from last.pt (when the run began: {weights_note})"
               if resumed else weights_note)
    log.say(f"core.train: {cfg.arch} on {device}" + (f" x{dist_info.world_size}" if dist_info.enabled else "")
            + f"; {len(train_split.records)} train / {len(valid_split.records)} valid images, "
              f"{per_epoch} per epoch; {cfg.scheduler} schedule, lr {cfg.lr:g}; {weights}")
    if resumed:
        log.say(f"core.train: resuming {cfg.out} at epoch {progress.start_epoch}/{cfg.epochs}")
    long_run = _long_run_warning(cfg, device, len(train_split.records), progress.start_epoch)
    if long_run:
        log.say(long_run)
    if per_epoch < len(train_split.records) and per_epoch < FEW_IMAGES_PER_EPOCH:
        log.say(f"core.train: note: each epoch draws {per_epoch} of the {len(train_split.records)} training images "
                f"(--subset-fraction {cfg.subset_fraction:g}); --subset-fraction 1 trains on all of them every epoch")


def _long_run_warning(cfg: TrainConfig, device: torch.device, train_images: int, start_epoch: int) -> str | None:
    """What the Train page warns before a launch, for the command line: hours of CPU ahead (the reference
    architecture is the default, and trains at about 0.06 images/s on a 2-core CPU)."""
    if device.type != "cpu":
        return None
    left = dataclasses.replace(cfg, device="cpu", epochs=max(1, cfg.epochs - start_epoch + 1))
    seconds = estimated_seconds(left, train_images, False, os.cpu_count() or 1)
    if seconds is None or seconds <= LONG_RUN_S:
        return None
    smaller = (" --arch digitnet_fpn --lr 1e-3 --batch-size 16 is the CPU-sized model;"
               if cfg.arch != "digitnet_fpn" else " fewer --epochs or a smaller --subset-fraction make it shorter;")
    return (f"core.train: warning: on this CPU the {left.epochs} epoch(s) ahead take about {seconds / 3600:.1f} hours "
            f"with {cfg.arch};{smaller} Ctrl-C stops at the next step and --resume goes on from the last epoch")


def _finish(cfg: TrainConfig, status: str, progress: _Progress, model, valid_split, device, is_main: bool,
            log: EventLog | None, say, stop: StopFlag, started: float) -> int:
    """The best epoch's report (a completed run, or a stopped one whose best epoch ran in this process: its
    detections are at hand, and best.pt would otherwise keep no reader of its own and an older epoch's report), the
    ``end`` event and the exit code."""
    best = progress.best
    fresh_best = status == "stopped" and progress.best_detections is not None
    if (status == "completed" or fresh_best) and is_main and best["epoch"] is not None:
        _write_best_report(cfg, model, valid_split, device, progress.best_detections, say)
    seconds = round(time.perf_counter() - started, 2)
    if log is not None:
        # The readable line before the event: the Train page stops refreshing once it sees the ``end`` event,
        # so a log shown then must already hold the run's last line.
        took = f"{seconds:.0f} s" + (f" (this session, from epoch {progress.start_epoch})"
                                      if progress.start_epoch > 1 else "")
        say(f"core.train: {status} after {took}; best mAP {best['mAP']:.4f} at epoch {best['epoch']}"
            if best["epoch"] else f"core.train: {status} after {took}; no epoch finished")
        message = _stop_message(stop, cfg.out) if status == "stopped" else ""
        log.emit("end", status=status, best_epoch=best["epoch"], best_mAP=best["mAP"] if best["epoch"] else None,
                 epochs_done=len(progress.history), seconds=seconds, message=message)
    return 0 if status == "completed" else 130


def main(argv: list[str] | None = None) -> int:
    cfg, explicit = parse_args(argv)
    # config.json records the data folder whole: "data/synth" from a terminal elsewhere means nothing to the app
    # (or to a later --resume from another folder).
    cfg = dataclasses.replace(cfg, data=os.path.abspath(cfg.data)) if cfg.data else cfg
    if cfg.arch == "digitnet_fpn" and "lr" not in explicit and not cfg.resume and not cfg.fine_tunes:
        # --lr's default is the reference recipe's, made for COCO-pretrained ResNet-50 weights; a fine-tune from a
        # checkpoint wants about that rate, so it is not told to raise it.
        print(f"core.train: note: lr {cfg.lr:g} is the reference recipe's; digitnet_fpn trains from scratch with "
              "--lr 1e-3 in the README and the app's CPU preset", file=sys.stderr, flush=True)
    stop = StopFlag()
    stop.install()
    return run(cfg, explicit, stop)


if __name__ == "__main__":
    sys.exit(main())
