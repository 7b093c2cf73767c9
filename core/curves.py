"""Per-epoch curves of stored runs, for the Schedulers page and for reports.

Reads every run's ``history.json`` (or its epoch events) into one long table,
smooths it the way TensorBoard does (exponential moving average, debiased), and
summarises each run (best mAP and its epoch, final mAP, training time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.runs import read_config, read_history, run_dirs, run_status

METRICS = {
    "mAP": "validation mAP@[.5:.95]",
    "AP50": "validation AP@.50",
    "AP75": "validation AP@.75",
    "task2_accuracy": "validation whole-number accuracy",
    "loss": "training loss",
    "loss_classifier": "classifier loss",
    "loss_box_reg": "box regression loss",
    "loss_objectness": "RPN objectness loss",
    "loss_rpn_box_reg": "RPN box loss",
    "lr": "learning rate",
}
LOG_SCALE_METRICS = ("loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "lr")
UNSMOOTHED_METRICS = ("lr",)  # a schedule, not a noisy measurement: smoothing would only misdraw it
VALIDATION_METRICS = ("mAP", "AP50", "AP75", "task2_accuracy")  # where the best-mAP epoch is marked


@dataclass
class Run:
    name: str
    source: str  # "shipped" (checkpoints/curves) or "runs"
    path: str
    config: dict[str, Any]
    history: list[dict[str, Any]]
    state: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} (shipped)" if self.source == "shipped" else self.name


def load_runs() -> tuple[list[Run], dict[str, str]]:
    """Every readable run, and for each unreadable one the reason it was skipped."""
    runs, skipped = [], {}
    for source, path in run_dirs():
        name = os.path.basename(path)
        try:
            history = read_history(path)
            config = read_config(path)
        except (OSError, ValueError) as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
            continue
        state = run_status(path)["state"] if source == "runs" else "completed"
        runs.append(Run(name, source, path, config, history, state))
    return runs, skipped


def default_selection(runs: list[Run], newest: int = 2) -> list[str]:
    """The shipped pair and ``newest`` of the user's runs that have finished an epoch: the newest run
    of each scheduler first (a cosine run beside a step run is the comparison this page is for),
    then the newest others (by folder time)."""
    shipped = [run.label for run in runs if run.source == "shipped"]
    own = sorted((run for run in runs if run.source == "runs" and run.history),
                 key=lambda run: os.path.getmtime(run.path), reverse=True)
    one_per_scheduler = list({run.config.get("scheduler"): run for run in reversed(own)}.values())
    one_per_scheduler.sort(key=own.index)
    picked = [*one_per_scheduler, *(run for run in own if run not in one_per_scheduler)][:newest]
    return shipped + [run.label for run in picked]


def curves_frame(runs: list[Run]) -> pd.DataFrame:
    """Long table: one row per (run, epoch) with every metric the run recorded."""
    rows = []
    for run in runs:
        for record in run.history:
            row = {"run": run.label, "scheduler": run.config.get("scheduler", "")}
            row.update({k: record.get(k) for k in ["epoch", *METRICS, "seconds"]})
            rows.append(row)
    frame = pd.DataFrame(rows, columns=["run", "scheduler", "epoch", *METRICS, "seconds"])
    return frame.sort_values(["run", "epoch"], kind="stable").reset_index(drop=True)


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased for the first points."""
    if not 0.0 <= weight < 1.0:
        raise ValueError("smoothing weight must be in [0, 1)")
    out, last, count = [], 0.0, 0
    for value in values:
        if value is None or value != value:
            out.append(None)
            continue
        count += 1
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight**count))
    return out


def summary(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        history = [h for h in run.history if h.get("mAP") is not None]
        best = max(history, key=lambda h: h["mAP"], default=None)
        rows.append({
            "run": run.label,
            "scheduler": run.config.get("scheduler", ""),
            "arch": run.config.get("arch", ""),
            "epochs": len(run.history),
            "best mAP": best["mAP"] if best else None,
            "best epoch": best["epoch"] if best else None,
            "final mAP": history[-1]["mAP"] if history else None,
            "final lr": run.history[-1].get("lr") if run.history else None,
            "training time (min)": round(sum(h.get("seconds") or 0 for h in run.history) / 60, 1),
            "state": run.state,
        })
    return pd.DataFrame(rows)


def best_epochs(runs: list[Run]) -> dict[str, int]:
    """Each run's epoch of highest validation mAP (the first of equals). A run that never scored above 0 has
    none: its "best" would be epoch 1 by a tie, and such runs' stars piled up there."""
    out = {}
    for run in runs:
        scored = [h for h in run.history if h.get("mAP") is not None]
        if scored and max(h["mAP"] for h in scored) > 0:
            out[run.label] = max(scored, key=lambda h: h["mAP"])["epoch"]
    return out
