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
