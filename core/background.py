"""An evaluation running in a thread of the app's server, which a page can watch, cancel and reuse.

The Evaluate page keeps one ``EvaluationJob`` per (checkpoint version, annotation file version,
split, input size): a finished job is its cache, a running one is watched from any browser tab.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from core.checkpoint import CheckpointError
from core.data import DatasetError, Split, listed, load_split
from core.evaluate import detect_split
from core.predict import LoadedModel, load_model
from core.report import Report, build_report, write_report


@dataclass(frozen=True)
class JobKey:
    checkpoint: str
    checkpoint_mtime: float
    root: str
    annotations_mtime: float
    split: str
    input_size: int | str | None
    skip_invalid: bool = False  # score the images without problems instead of refusing the split


def job_key(checkpoint: str, root: str, split: str, input_size: int | str | None = None,
            skip_invalid: bool = False) -> JobKey:
    """The key of an evaluation; a changed checkpoint or annotation file is another evaluation.
    Raises OSError naming the file when one is missing."""
    annotations = os.path.join(root, f"{split}.json")
    return JobKey(os.path.abspath(checkpoint), os.path.getmtime(checkpoint), os.path.abspath(root),
                  os.path.getmtime(annotations), split, input_size, skip_invalid)


@dataclass
class EvaluationResult:
    report: Report
    split: Split
    detections: list[dict[str, list]]
    folder: str  # the report's files
    model_meta: dict[str, Any]


@dataclass
class EvaluationJob:
    key: JobKey
    state: str = "new"  # new, running, done, failed, cancelled
    done: int = 0
    total: int = 0
    message: str = ""
    skippable: bool = False  # failed on images with problems that skip_invalid would drop
    result: EvaluationResult | None = None
    started: float = field(default_factory=time.time)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "EvaluationJob":
        self.state = "running"
        self._thread = threading.Thread(target=self._run, name=f"evaluate {os.path.basename(self.key.root)}",
                                        daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def discard(self) -> None:
        """Remove the report folder this finished job wrote: the app keeps a few results, and each left behind
        would stay in the temporary folder for good."""
        if self.result is not None:
            shutil.rmtree(self.result.folder, ignore_errors=True)

    def wait(self, timeout: float | None = None) -> "EvaluationJob":
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def _run(self) -> None:
        key = self.key
        try:
            self.message = "reading the annotations and checking every image"
            split = load_split(key.root, key.split, skip_invalid=key.skip_invalid)
            self.total = len(split.records)
            self.message = "loading the model"
            loaded: LoadedModel = load_model(key.checkpoint)
            self.message = "detecting"
            started = time.perf_counter()
            detections = detect_split(loaded.model, split, loaded.device, progress=self._progress,
                                      should_stop=self._cancel.is_set, input_size=key.input_size)
            seconds = time.perf_counter() - started
            self.message = "scoring"
            report = build_report(split, detections, loaded.reader, seconds,
                                  {"checkpoint": key.checkpoint, "data": key.root, "split": key.split,
                                   "inference": loaded.inference_note(key.input_size),
                                   "skipped_images": split.dropped, "skipped": listed(split.problems),
                                   "data_warnings": listed(split.warnings)})
            folder = tempfile.mkdtemp(prefix="digit-studio-report-")
            write_report(report, folder)
            self.result = EvaluationResult(report, split, detections, folder, loaded.meta)
            self.state, self.message = "done", ""
        except InterruptedError:
            self.state, self.message = "cancelled", "cancelled"
        except DatasetError as exc:
            self.state, self.message = "failed", str(exc)
            self.skippable = exc.skippable
        except (CheckpointError, OSError, ValueError) as exc:
            self.state, self.message = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - a thread has nobody else to tell
            self.state, self.message = "failed", f"{type(exc).__name__}: {exc}"

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total
