"""Run folders: the lock that marks one in use, and reading what a run has written.

A run folder (``runs/<name>/``) holds ``config.json``, ``log.jsonl`` (events),
``history.json`` (one record per finished epoch), ``best.pt`` and ``last.pt``.
The training process holds an exclusive ``flock`` on ``.lock`` while it runs; the
kernel drops it when the process dies, however it dies, so a stale lock cannot exist.
"""

from __future__ import annotations

import json
import os
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are then not protected against a second launch
    fcntl = None  # type: ignore[assignment]

from core.events import read_events

LOCK_NAME = ".lock"


class RunBusyError(RuntimeError):
    """Another live process is training into this run folder."""


class RunLock:
    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = lock_owner(os.path.dirname(self.path))
                raise RunBusyError(
                    f"{os.path.dirname(self.path)} is in use by another training process"
                    + (f" (pid {pid})" if pid else "") + "; stop it first or choose another run folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_owner(run_dir: str) -> int | None:
    try:
        with open(os.path.join(run_dir, LOCK_NAME)) as handle:
            text = handle.read().strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def is_locked(run_dir: str) -> bool:
    """True while a live training process holds the run folder."""
    path = os.path.join(run_dir, LOCK_NAME)
    if fcntl is None or not os.path.exists(path):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock we may have taken
    return False


def read_history(run_dir: str) -> list[dict[str, Any]]:
    """Finished epochs: ``history.json`` when present, else the epoch events of ``log.jsonl``."""
    path = os.path.join(run_dir, "history.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            history = json.load(handle)
        if not isinstance(history, list) or not all(isinstance(h, dict) and "epoch" in h for h in history):
            raise ValueError(f"{path}: expected a list of epoch records")
        return history
    by_epoch: dict[int, dict[str, Any]] = {}
    for event in read_events(os.path.join(run_dir, "log.jsonl")):
        if event.get("event") == "epoch" and isinstance(event.get("epoch"), int):
            by_epoch[event["epoch"]] = {k: v for k, v in event.items() if k not in ("event", "time")}
    return [by_epoch[k] for k in sorted(by_epoch)]


# ------------------------------------------------------------------ listing runs and curves

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runs_root() -> str:
    return os.environ.get("DIGIT_STUDIO_RUNS", os.path.join(PROJECT_ROOT, "runs"))


def checkpoints_root() -> str:
    return os.environ.get("DIGIT_STUDIO_CHECKPOINTS", os.path.join(PROJECT_ROOT, "checkpoints"))


def curves_root() -> str:
    """Shipped scheduler curves: ``checkpoints/curves/<run>/{config.json,history.json}``."""
    return os.path.join(checkpoints_root(), "curves")


def default_checkpoint() -> str:
    return os.path.join(checkpoints_root(), "default.pt")


def list_checkpoints() -> list[str]:
    """The shipped default first, then, newest first, every other checkpoint written into ``checkpoints/`` (an
    export beside the default, as ``core.checkpoint export``'s help suggests) or straight into ``runs/``
    (``core.checkpoint grow``, ``export`` or ``average`` there) or into a run folder (its ``best.pt``, and what a user
    writes beside it: ``core.train``'s end-of-run hint exports ``read-as-weights.pt`` there). ``last.pt`` is left
    out: it is the run's resume file, and one per run would double the list."""
    default = default_checkpoint()
    found = [default] if os.path.isfile(default) else []
    paths = [p for p in _pt_files(checkpoints_root()) if os.path.abspath(p) != os.path.abspath(default)]
    root = runs_root()
    if os.path.isdir(root):
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if os.path.isdir(path):
                paths += _pt_files(path)
            elif name.endswith(".pt"):
                paths.append(path)
    return found + sorted((p for p in paths if os.path.isfile(p)), key=os.path.getmtime, reverse=True)


def _pt_files(folder: str) -> list[str]:
    """The checkpoints a folder holds, its resume file (``last.pt``) left out."""
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".pt") and f != "last.pt"]


# What only training writes into a run folder, or the app when it launched training there (launch.json: a launch
# whose process failed before it wrote anything is still a run, shown with its error).
RUN_FILES = ("config.json", "log.jsonl", "history.json", "launch.json")


def is_run_dir(path: str) -> bool:
    """A folder training, or a launch from the app, wrote into (one a user copied a checkpoint into is no run)."""
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in RUN_FILES)


def run_dirs() -> list[tuple[str, str]]:
    """(source, folder) of every stored run: shipped curves, then ``runs/*``, each by name."""
    out = []
    for source, root in (("shipped", curves_root()), ("runs", runs_root())):
        if not os.path.isdir(root):
            continue
        out += [(source, os.path.join(root, name)) for name in sorted(os.listdir(root))
                if is_run_dir(os.path.join(root, name))]
    return out


def read_config(run_dir: str) -> dict[str, Any]:
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return config


def run_status(run_dir: str, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a run is doing, from its lock and its events.

    ``state``: running (a live process holds the lock), completed, stopped, failed (an error
    event), died (the process is gone without an end or error event: killed, out of memory),
    or new (nothing written yet). ``message`` carries the error text; ``progress`` the last
    progress event since the last start; ``epochs_done`` the finished epochs; ``refused`` the message of a
    resume turned down since the run last started or ended (it leaves ``state`` as it was), else "".
    """
    if events is None:  # callers that also need the events read them once and pass them in
        events = read_events(os.path.join(run_dir, "log.jsonl"))
    running = is_locked(run_dir)
    last_end = next((e for e in reversed(events) if e["event"] in ("end", "error", "start")), None)
    # The progress of the attempt now on record: a resumed run has none until its first step, not the last one before.
    latest = next((e for e in reversed(events) if e["event"] in ("progress", "start")), None)
    progress = latest if latest is not None and latest["event"] == "progress" else None
    start = next((e for e in reversed(events) if e["event"] == "start"), None)
    epochs_done = len({e["epoch"] for e in events if e["event"] == "epoch"})
    message = ""
    if running:
        state = "running"
    elif last_end is None:
        state = "new"
        launch_error = _launch_error(run_dir)
        if launch_error:
            state, message = "failed", launch_error
    elif last_end["event"] == "end":
        state = last_end.get("status", "completed")
        message = last_end.get("message", "")
    elif last_end["event"] == "error":
        state, message = "failed", last_end.get("message", "")
    else:
        state = "died"
        message = "the training process ended without a final event (killed or crashed)"
        tail = _launch_error(run_dir)
        if tail:
            message += f": {tail}"
    refusal = next((e for e in reversed(events) if e["event"] in ("refused", "end", "error", "start")), None)
    refused = refusal.get("message", "") if refusal is not None and refusal["event"] == "refused" else ""
    return {"state": state, "message": message, "progress": progress, "start": start,
            "epochs_done": epochs_done, "epochs": (start or {}).get("epochs"), "refused": refused}


def _launch_error(run_dir: str) -> str:
    """The last meaningful line of the child's stderr, if the launcher captured one."""
    path = os.path.join(run_dir, "stderr.log")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for line in handle.readlines()[-40:] if line.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith(("core.train: error:", "Traceback")) or "Error" in line.split(":")[0]:
            return line
    return ""
