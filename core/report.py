"""Error analysis of one detection pass: where a detector fails, as files anyone can open.

``build_report`` turns a split and its detections into tables; ``write_report`` saves them:

- ``metrics.json``: the 12 COCO numbers, per-class AP and AP50, Task 2 overall and by number length, ms/image;
- ``per_class.csv``: AP, AP50, true digits and digits read per class;
- ``confusion.csv``: true digit (rows, plus ``extra``: a digit read where there is none) against digit read
  (columns, plus ``missed``), for the digits that make up the number read (by the Task 2 reader),
  matched one to one at IoU >= 0.5;
- ``pr.csv``: precision against recall per class at IoU 0.5, straight from pycocotools' ``eval["precision"]``;
- ``task2_sweep.csv``: Task 2 accuracy of each one-line reader (anchor, member), on every image and on the crops
  that hold a number (where a training run picks its crop reader, ``core.evaluate.ReaderSweeps.pick``);
- ``errors.csv``: every image whose number is read wrong, with the kinds of error, worst first;
- the same as PNG figures (matplotlib, for people who only look at the folder).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.data import ImageRecord, Split
from core.evaluate import best_reader, reader_sweeps, run_cocoeval, score_detections, split_results
from core.predict import NumberReader, box_overlap, read_digits

MATCH_IOU = 0.5
BOX_OFF_IOU = 0.1  # a right digit overlapping its glyph this much, but under MATCH_IOU: the box is off
ERROR_KINDS = ("missed digit", "extra digit", "wrong digit", "box off")
DIGITS = [str(d) for d in range(10)]


@dataclass
class ImageMatch:
    """One image's digits read against its true digits."""

    number: str = "-1"  # the number read (Task 2), from the same digits
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (true digit, digit read), IoU >= 0.5
    missed: list[int] = field(default_factory=list)  # true digits nothing was read on
    extra: list[int] = field(default_factory=list)  # digits read where there is none
    box_off: list[int] = field(default_factory=list)  # right digit, box IoU between 0.1 and 0.5

    def kinds(self) -> list[str]:
        found = {"missed digit": self.missed, "extra digit": self.extra,
                 "wrong digit": [t for t, p in self.pairs if t != p], "box off": self.box_off}
        return [kind for kind in ERROR_KINDS if found[kind]]

    def error_count(self) -> int:
        return len(self.missed) + len(self.extra) + len(self.box_off) + sum(t != p for t, p in self.pairs)


def match_image(record: ImageRecord, detection: dict[str, list], reader: NumberReader | float) -> ImageMatch:
    """Greedy one-to-one matching by IoU (highest first), as COCO matches, but across classes so
    that a wrong digit on the right glyph counts as a confusion rather than a miss plus an extra."""
    read = read_digits(detection, reader)
    truths = [(box, label - 1) for box, label in zip(record.boxes, record.labels)]
    candidates = sorted(((box_overlap(t[0], detection["boxes"][r])[0], ti, r) for ti, t in enumerate(truths)
                         for r in read), reverse=True)
    match = ImageMatch(number="".join(str(detection["digits"][r]) for r in read) or "-1")
    used_truth, used_read = set(), set()
    for iou, ti, r in candidates:
        if iou < MATCH_IOU:
            break
        if ti not in used_truth and r not in used_read:
            used_truth.add(ti)
            used_read.add(r)
            match.pairs.append((truths[ti][1], detection["digits"][r]))
    for iou, ti, r in candidates:  # right digit, box too far off to count
        if BOX_OFF_IOU <= iou < MATCH_IOU and ti not in used_truth and r not in used_read \
                and detection["digits"][r] == truths[ti][1]:
            used_truth.add(ti)
            used_read.add(r)
            match.box_off.append(truths[ti][1])
    match.missed = [truths[ti][1] for ti in range(len(truths)) if ti not in used_truth]
    match.extra = [detection["digits"][r] for r in read if r not in used_read]
    return match


def confusion_matrix(matches: Sequence[ImageMatch]) -> pd.DataFrame:
    """Rows: true digit 0..9 and ``extra``; columns: digit read 0..9 and ``missed``."""
    table = np.zeros((11, 11), dtype=int)
    for m in matches:
        for truth, read in m.pairs:
            table[truth, read] += 1
        for truth in m.missed + m.box_off:
            table[truth, 10] += 1
        for read in m.extra:
            table[10, read] += 1
    return pd.DataFrame(table, index=pd.Index(DIGITS + ["extra"], name="true"),
                        columns=pd.Index(DIGITS + ["missed"], name="read"))


def pr_table(evaluator) -> pd.DataFrame:
    """Precision at each of pycocotools' 101 recall points, per class, IoU 0.5, all areas, 100 detections
    (points where the class never reaches that recall are left out, as pycocotools marks them -1)."""
    rows = []
    if evaluator is not None:
        precision = evaluator.eval["precision"]  # [iou, recall, class, area, maxdets]
        for k, cat_id in enumerate(evaluator.params.catIds):
            for recall, value in zip(evaluator.params.recThrs, precision[0, :, k, 0, -1]):
                if value > -1:
                    rows.append((str(cat_id - 1), float(recall), float(value)))
    return pd.DataFrame(rows, columns=["digit", "recall", "precision"])


def errors_table(records: Sequence[ImageRecord], matches: Sequence[ImageMatch]) -> pd.DataFrame:
    rows = []
    for record, match in zip(records, matches):
        if match.number == record.number:
            continue
        rows.append({"image_id": record.image_id, "file_name": os.path.basename(record.path), "truth": record.number,
                     "read": match.number, "errors": match.error_count(), "kinds": "; ".join(match.kinds()),
                     "missed": "".join(map(str, match.missed)), "extra": "".join(map(str, match.extra)),
                     "wrong": " ".join(f"{t}->{p}" for t, p in match.pairs if t != p),
                     "box_off": "".join(map(str, match.box_off))})
    frame = pd.DataFrame(rows, columns=["image_id", "file_name", "truth", "read", "errors", "kinds", "missed",
                                        "extra", "wrong", "box_off"])
    return frame.sort_values(["errors", "image_id"], ascending=[False, True], kind="stable").reset_index(drop=True)


@dataclass
class Report:
    metrics: dict[str, Any]
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    pr: pd.DataFrame
    sweep: pd.DataFrame
    errors: pd.DataFrame

    @property
    def reader(self) -> NumberReader:
        """The reader the report's numbers were read with."""
        return NumberReader.from_meta(self.metrics)


def build_report(split: Split, detections: Sequence[dict[str, list]], reader: NumberReader | float | None,
                 seconds: float | None = None, extra: dict[str, Any] | None = None,
                 sweep: dict[NumberReader, float] | None = None) -> Report:
    """Every table of the report from one detection pass, numbers read by ``reader`` (a plain threshold,
    or None: the reader this split picks, ``ReaderSweeps.pick``); ``seconds``: how long the pass took;
    ``sweep``: ``task2_sweep`` of the same detections, when the caller has already run it."""
    records = split.records
    sweeps = reader_sweeps(records, detections, sweep)
    pick = sweeps.pick()
    reader = NumberReader.of(pick if reader is None else reader)
    evaluator = run_cocoeval(split.coco(), split_results(split, detections))
    metrics = score_detections(split, detections, reader, evaluator)
    if seconds is not None:
        metrics["seconds"] = round(seconds, 3)
        metrics["ms_per_image"] = round(1000 * seconds / max(len(split.records), 1), 2)
    metrics.update(extra or {})
    matches = [match_image(r, d, reader) for r, d in zip(split.records, detections)]
    confusion = confusion_matrix(matches)
    per_class = pd.DataFrame({"digit": DIGITS,
                              "AP": [metrics["per_class_AP"].get(d) for d in DIGITS],
                              "AP50": [metrics["per_class_AP50"].get(d) for d in DIGITS],
                              "true_digits": confusion.iloc[:10].sum(axis=1).to_numpy(),
                              "read_right": np.diag(confusion.to_numpy())[:10]})
    metrics["task2_best_reader"] = best_reader(sweeps.everything).as_dict()
    metrics["task2_reader_pick"] = pick.as_dict()
    metrics["task2_pick_crops"] = sweeps.crop_count  # crops that picked it
    return Report(metrics, per_class, confusion, pr_table(evaluator),
                  pd.DataFrame([{"anchor": r.anchor, "member": r.member, "task2_accuracy": a,
                                 "crops_with_number_accuracy": sweeps.on_crops(r)}
                                for r, a in sweeps.everything.items()]),
                  errors_table(records, matches))


REPORT_FILES = ("metrics.json", "per_class.csv", "confusion.csv", "pr.csv", "task2_sweep.csv", "errors.csv",
                "per_class.png", "confusion.png", "pr.png", "task2_sweep.png")


def write_report(report: Report, out_dir: str) -> list[str]:
    """The report's files (REPORT_FILES) in ``out_dir``, each written atomically."""
    from core.checkpoint import atomic_write_text

    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "metrics.json"), json.dumps(_plain(report.metrics), indent=1))
    for name, frame, index in (("per_class.csv", report.per_class, False), ("confusion.csv", report.confusion, True),
                               ("pr.csv", report.pr, False), ("task2_sweep.csv", report.sweep, False),
                               ("errors.csv", report.errors, False)):
        atomic_write_text(os.path.join(out_dir, name), frame.to_csv(index=index))
    _write_figures(report, out_dir)
    return [os.path.join(out_dir, name) for name in REPORT_FILES]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write_figures(report: Report, out_dir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    def save(figure, name: str) -> None:
        partial = os.path.join(out_dir, f".{name}.partial.png")
        figure.savefig(partial, dpi=110, bbox_inches="tight")
        plt.close(figure)
        os.replace(partial, os.path.join(out_dir, name))

    figure, axis = plt.subplots(figsize=(7, 3.2))
    x = np.arange(10)
    axis.bar(x - 0.2, report.per_class["AP"].fillna(0), 0.4, label="AP @[.5:.95]")
    axis.bar(x + 0.2, report.per_class["AP50"].fillna(0), 0.4, label="AP50")
    axis.set(xticks=x, xticklabels=DIGITS, ylim=(0, 1), xlabel="digit", title="Per-class AP")
    axis.legend(loc="lower right")
    save(figure, "per_class.png")

    figure, axis = plt.subplots(figsize=(6.4, 5.6))
    values = report.confusion.to_numpy()
    axis.imshow(np.log1p(values), cmap="Blues")
    for (i, j), count in np.ndenumerate(values):
        if count:
            axis.text(j, i, str(count), ha="center", va="center", fontsize=7,
                      color="white" if count > values.max() / 3 else "black")
    axis.set(xticks=range(11), xticklabels=list(report.confusion.columns), yticks=range(11),
             yticklabels=list(report.confusion.index), xlabel="digit read", ylabel="true digit",
             title=f"Confusion of the digits read, IoU >= {MATCH_IOU}")
    save(figure, "confusion.png")

    figure, axis = plt.subplots(figsize=(6, 4.5))
    for digit, rows in report.pr.groupby("digit"):
        axis.plot(rows["recall"], rows["precision"], label=digit)
    axis.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title="Precision-recall at IoU 0.5")
    if not report.pr.empty:  # an early model may reach no recall point at all: then there is nothing to name
        axis.legend(title="digit", ncol=2, fontsize=8)
    save(figure, "pr.png")

    figure, axis = plt.subplots(figsize=(6, 3.2))
    same = report.sweep[report.sweep["member"] == report.sweep["anchor"]]
    axis.plot(same["anchor"], same["task2_accuracy"], marker="o", label="member = anchor")
    for member, rows in report.sweep[report.sweep["member"] < report.sweep["anchor"]].groupby("member"):
        if member in (0.3, 0.5, 0.7):
            axis.plot(rows["anchor"], rows["task2_accuracy"], marker=".", label=f"member {member:.1f}")
    axis.axvline(report.metrics["task2_reader"]["anchor"], color="grey", linestyle="--", label="anchor used")
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="anchor score", ylabel="Task 2 accuracy",
             title="Whole-number accuracy against the reader's scores (one line)")
    axis.legend(fontsize=8)
    save(figure, "task2_sweep.png")
