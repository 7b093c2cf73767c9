"""Starting and stopping ``python -m core.train`` from the app.

The child gets an argument list (never a shell string), its own process session (so it
outlives a page rerun, a closed tab or a restarted app, and Stop can signal its whole
process group), and files for its output in the run folder: the page tails those, a pipe
would block the child once nobody reads it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from core.config import ConfigError, TrainConfig
from core.events import events_as_lines, read_events
from core.runs import is_locked, lock_owner, runs_root

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class LaunchError(ValueError):
    """A launch that cannot happen (bad name, busy folder, bad settings)."""


def run_dir_for(name: str, root: str | None = None) -> str:
    """The folder of run ``name`` inside ``runs/``; names that could leave it are refused."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name) or ".." in name:
        raise LaunchError(
            f"run name {name!r} is not allowed: use 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (no spaces, slashes or '..')")
    root = os.path.abspath(root or runs_root())
    path = os.path.abspath(os.path.join(root, name))
    if os.path.dirname(path) != root:
        raise LaunchError(f"run name {name!r} would leave {root}")
    return path


def start_run(config: TrainConfig, name: str, root: str | None = None, python: str | None = None,
              cwd: str | None = None) -> dict[str, Any]:
    """Launch training into ``runs/<name>``; returns the launch record (pid, argv, folder)."""
    run_dir = run_dir_for(name, root)
    config = TrainConfig.from_dict({**config.to_dict(), "out": run_dir})
    try:
        config.check_data()  # the same words as the Train page's check: a resume's folder may have moved
    except ConfigError as exc:
        raise LaunchError(str(exc)) from None
    if is_locked(run_dir):
        pid = lock_owner(run_dir)
        raise LaunchError(f"run {name!r} is still training" + (f" (pid {pid})" if pid else "")
                          + "; stop it or choose another name")
    if not config.resume and any(os.path.exists(os.path.join(run_dir, f)) for f in ("last.pt", "history.json")):
        raise LaunchError(f"run {name!r} already exists; choose another name or resume it")
    os.makedirs(run_dir, exist_ok=True)
    argv = [python or sys.executable, "-m", "core.train", *config.to_argv()]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # A resume continues the run's output; a fresh launch under the name of an attempt that saved no
    # epoch (checked above) starts it anew, so its log does not open with the old attempt's lines.
    mode = "ab" if config.resume else "wb"
    _begin_with_the_command_lines_log(run_dir, config.resume)
    with open(os.path.join(run_dir, "stdout.log"), mode) as out, open(os.path.join(run_dir, "stderr.log"), mode) as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                   cwd=cwd or os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   env=env, start_new_session=True, close_fds=True)
    # Reap the child when it exits so it never lingers as a zombie of the app server.
    threading.Thread(target=process.wait, daemon=True, name=f"reap-{process.pid}").start()
    record = {"pid": process.pid, "pgid": process.pid, "argv": argv, "run_dir": run_dir, "name": name,
              "started": time.time()}
    with open(os.path.join(run_dir, "launch.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    return record


def wait_until_started(run_dir: str, timeout: float = 30.0) -> bool:
    """True once the launched child holds the run lock; False if it exited first or timed out.

    (log.jsonl is no evidence: a resumed run's log exists before the new process starts.)
    """
    record = launch_record(run_dir) or {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_locked(run_dir):
            return True
        if record.get("pid") is not None and not _alive(record["pid"]):
            return False
        time.sleep(0.1)
    return False


def launch_record(run_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(run_dir, "launch.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def stop_run(run_dir: str, grace_s: float = 0.0) -> bool:
    """Ask the run's whole process group to stop (SIGTERM: the trainer finishes its step and
    exits with last.pt intact). With ``grace_s``, SIGKILL whatever is left after that long."""
    pid = lock_owner(run_dir) if is_locked(run_dir) else None
    record = launch_record(run_dir)
    if pid is None and record and _alive(record.get("pid")):
        pid = record["pid"]
    if pid is None:
        return False

    def send(sig: int) -> bool:
        try:
            # A process the launcher started leads its own session: signal the whole group
            # (DataLoader workers included). Anything else (a run started from a shell that
            # may hold other programs in its group) gets the signal alone.
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    if not send(signal.SIGTERM):
        return False
    if grace_s:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and is_locked(run_dir):
            time.sleep(0.1)
        if is_locked(run_dir):
            send(signal.SIGKILL)
    return True


def _begin_with_the_command_lines_log(run_dir: str, resume: bool) -> None:
    """A run started from the command line printed to its terminal and has no stdout.log: resumed from the app,
    its log starts with what its events say, so the page does not show only the new lines."""
    stdout, events = os.path.join(run_dir, "stdout.log"), os.path.join(run_dir, "log.jsonl")
    if not resume or os.path.exists(stdout) or not os.path.exists(events):
        return
    with open(stdout, "w", encoding="utf-8") as handle:
        handle.write("\n".join([*events_as_lines(read_events(events)), ""]))


SAVED_FILES = ("best.pt", "last.pt", "history.json")  # what a run that trained at least one epoch holds


def remove_failed_run(name: str, root: str | None = None) -> None:
    """Delete run ``name``'s folder when it holds nothing training saved: a launch that bad input stopped
    leaves config.json, its log and stderr.log behind, and the run list fills with them. A run that saved
    an epoch, or one still held by a process, is refused (LaunchError)."""
    run_dir = run_dir_for(name, root)
    record = launch_record(run_dir)
    if is_locked(run_dir) or (record is not None and _alive(record.get("pid"))):  # or launched, not yet locked
        raise LaunchError(f"run {name!r} is still training; stop it first")
    saved = [f for f in SAVED_FILES if os.path.exists(os.path.join(run_dir, f))]
    if saved:
        raise LaunchError(f"run {name!r} holds {', '.join(saved)}: only a run that saved nothing can be deleted here")
    shutil.rmtree(run_dir)


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
