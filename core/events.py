"""Training events: JSON lines for programs, a readable line and a progress bar for people.

Every event is one JSON object per line in ``log.jsonl`` with an ``event`` name and a
``time`` (Unix seconds): start, progress, epoch, best, end, error, refused (a resume turned down
before it trained: bad input; the run stays as it was). The app and the plots
read these files while training runs, so each line is flushed as soon as it is written.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Iterator, TextIO


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class EventLog:
    """Appends events to a JSON-lines file (when given) and tells a human on ``stream``."""

    def __init__(self, path: str | None, stream: TextIO | None = sys.stdout):
        self.path = path
        self.stream = stream
        self._handle = open(path, "a", encoding="utf-8") if path else None
        self.emitted: list[str] = []  # this process's events, in order

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "time": round(time.time(), 3), **_plain(fields)}
        self.emitted.append(event)
        if self._handle is not None:
            self._handle.write(json.dumps(record) + "\n")
            self._handle.flush()
        return record

    def say(self, text: str) -> None:
        if self.stream is not None:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ProgressBar:
    """A one-line bar redrawn in place on a terminal; periodic plain lines in a log file."""

    def __init__(self, total: int, label: str, stream: TextIO | None = sys.stderr, every_s: float = 15.0):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream
        self.tty = bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
        self.every_s = every_s
        self.started = time.perf_counter()
        self._last = 0.0

    def update(self, done: int, suffix: str = "") -> None:
        if self.stream is None:
            return
        now = time.perf_counter()
        if not (self.tty or done >= self.total or now - self._last >= self.every_s):
            return
        self._last = now
        fraction = min(done / self.total, 1.0)
        elapsed = now - self.started
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        bar = "#" * int(fraction * 24)
        line = f"{self.label} [{bar:<24}] {done}/{self.total} {fraction:4.0%} {elapsed:5.0f}s<{eta:4.0f}s {suffix}"
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150) + ("\n" if done >= self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def read_events(path: str) -> list[dict[str, Any]]:
    """Every complete event in a log, skipping a half-written last line or a corrupt one."""
    return list(iter_events(path))


def iter_events(path: str) -> Iterator[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break  # being written right now
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "event" in record:
                    yield record
    except FileNotFoundError:
        return


def _summary(event: dict[str, Any]) -> str | None:
    kind = event.get("event")
    if kind == "start":
        return (f"start: {event.get('arch', '?')} on {event.get('device', '?')}, epochs {event.get('start_epoch', 1)}"
                f"-{event.get('epochs', '?')}" + (" (resumed)" if event.get("resumed") else ""))
    if kind == "epoch":
        named = (("loss", "loss"), ("mAP", "mAP"), ("task2", "task2_accuracy"))
        numbers = [f"{name} {event[key]:.4f}" for name, key in named if isinstance(event.get(key), (int, float))]
        return f"epoch {event.get('epoch', '?')}: " + ", ".join(numbers)
    if kind == "end":
        return f"end: {event.get('status', '?')}" + (f": {event['message']}" if event.get("message") else "")
    if kind in ("error", "refused"):
        return f"{kind}: {event.get('message', '')}"
    return None


def events_as_lines(events: list[dict[str, Any]]) -> list[str]:
    """A run's log read back as lines for people, under a line saying so: what a run started from the command
    line printed to its terminal, which no file keeps (progress events are left out)."""
    lines = ["(started from the command line; from its log.jsonl:)"]
    for event in events:
        text = _summary(event)
        if text is not None:
            when = event.get("time")
            stamp = time.strftime("%H:%M:%S", time.localtime(when)) if isinstance(when, (int, float)) else ""
            lines.append(f"{stamp} {text}".strip())
    return lines


def tail_text(path: str, max_bytes: int = 20_000) -> str:
    """The end of a text file (the human-readable log) without reading all of it."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            handle.seek(max(0, size - max_bytes))
            return handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def latest_progress(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's ``progress`` events (with a loss) as its latest attempt left them: a resumed or
    relaunched run redoes the epoch it was stopped in, so each ``start`` drops the earlier attempts'
    events from its start epoch on (a live chart would otherwise draw that epoch twice)."""
    kept: list[dict[str, Any]] = []
    for event in events:
        if event.get("event") == "start":
            kept = [e for e in kept if e["epoch"] < event.get("start_epoch", 1)]
        elif event.get("event") == "progress" and isinstance(event.get("loss"), (int, float)):
            kept.append(event)
    return kept
