"""Crash-test hooks: ``DIGIT_STUDIO_FAILPOINT=NAME@N`` kills this process with SIGKILL the
N-th time the code reaches ``reached(NAME)`` (N defaults to 1).

The reliability tests use it to kill training mid-epoch, mid-evaluation and mid-write at
exact, reproducible points. Without the variable, ``reached`` is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "DIGIT_STUDIO_FAILPOINT"
_hits: dict[str, int] = {}


def reached(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


class _KillAfterWrites:
    """A file proxy that reaches ``name`` after every ``write``: a kill lands half-way through a file."""

    def __init__(self, handle, name: str):
        self._handle = handle
        self._name = name

    def write(self, data) -> int:
        written = self._handle.write(data)
        self._handle.flush()  # so that a kill leaves these bytes on disk, as a crash mid-write would
        reached(self._name)
        return written

    def __getattr__(self, attribute):
        return getattr(self._handle, attribute)


def wrap_writes(handle, name: str):
    """``handle`` itself, unless the failpoint targets ``name``: then a proxy counting its writes."""
    spec = os.environ.get(ENV, "")
    return _KillAfterWrites(handle, name) if spec.partition("@")[0] == name else handle
