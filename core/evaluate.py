"""Scoring: COCO mAP (pycocotools) for Task 1 and whole-number accuracy for Task 2.

``python -m core.evaluate --ckpt FILE --data DIR [--split valid|test] [--json FILE]``
prints the 12 COCO numbers, per-class AP and Task 2 accuracy; ``--json`` saves them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from core.data import DatasetError, ImageRecord, Split, listed, load_split
from core.predict import TASK2_THRESHOLD, NumberReader, coco_results, detect, read_number

STAT_NAMES = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR_1", "AR_10", "AR_100", "AR_small", "AR_medium", "AR_large")


def run_cocoeval(coco_gt: dict, results: Sequence[dict[str, Any]]) -> COCOeval | None:
    """pycocotools' evaluation, accumulated and summarised (its ``eval["precision"]`` holds the PR
    curves); None when there are no detections: ``loadRes([])`` raises IndexError (early epochs)."""
    if not results:
        return None
    gt_dict = copy.copy(coco_gt)
    gt_dict.setdefault("info", {})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = gt.loadRes(list(results))
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.imgIds = sorted(img["id"] for img in gt_dict["images"])
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def coco_metrics(coco_gt: dict, results: Sequence[dict[str, Any]],
                 evaluator: COCOeval | None = None) -> dict[str, Any]:
    """The 12 COCO box numbers and per-class AP and AP50. ``None`` marks a number with no ground
    truth (e.g. AP_large when every digit is small); no detections at all score 0, not an error.
    ``evaluator``: an already run ``run_cocoeval`` of the same inputs."""
    class_names = [c["name"] for c in sorted(coco_gt["categories"], key=lambda c: c["id"])]
    evaluator = evaluator or run_cocoeval(coco_gt, results)
    if evaluator is None:
        zeros = {name: 0.0 for name in class_names}
        return {**{name: 0.0 for name in STAT_NAMES}, "per_class_AP": zeros, "per_class_AP50": dict(zeros),
                "detections": 0}
    stats = {name: (None if value < 0 else float(value)) for name, value in zip(STAT_NAMES, evaluator.stats)}
    precision = evaluator.eval["precision"]  # [iou, recall, class, area, maxdets]
    per_class, per_class50 = {}, {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        name = class_names[cat_id - 1] if 0 < cat_id <= len(class_names) else str(cat_id)
        for table, p in ((per_class, precision[:, :, k, 0, -1]), (per_class50, precision[0, :, k, 0, -1])):
            p = p[p > -1]
            table[name] = float(np.mean(p)) if p.size else None
    return {**stats, "per_class_AP": per_class, "per_class_AP50": per_class50, "detections": len(results)}


def task2_accuracy(records: Sequence[ImageRecord], numbers: Sequence[str]) -> float:
    if not records:
        return 0.0
    return sum(r.number == n for r, n in zip(records, numbers)) / len(records)


@torch.inference_mode()
def detect_split(model: torch.nn.Module, split: Split, device: torch.device, batch_size: int = 8,
                 progress: Callable[[int, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 input_size: int | str | None = None) -> list[dict[str, list]]:
    """Detections for every image of ``split``, in order (``input_size``: see ``core.predict.detect``)."""
    from core.images import decode_image

    detections = []
    records = split.records
    chunk = batch_size * 4
    for start in range(0, len(records), chunk):
        if should_stop is not None and should_stop():
            raise InterruptedError("evaluation stopped")
        images = [decode_image(r.path, exif_transpose=False) for r in records[start:start + chunk]]
        detections += detect(model, images, batch_size, device, input_size)
        if progress is not None:
            progress(min(start + chunk, len(records)), len(records))
    return detections


def split_results(split: Split, detections: Sequence[dict[str, list]]) -> list[dict[str, Any]]:
    """Task 1 entries (COCO results) of ``detections``, one per image of ``split``."""
    return [entry for record, det in zip(split.records, detections) for entry in coco_results(record.image_id, det)]


def score_detections(split: Split, detections: Sequence[dict[str, list]],
                     reader: NumberReader | float = TASK2_THRESHOLD,
                     evaluator: COCOeval | None = None) -> dict[str, Any]:
    """COCO numbers, per-class AP and Task 2 accuracy of ``detections`` (one per image of ``split``),
    numbers read by ``reader`` (or a plain threshold); ``evaluator``: ``run_cocoeval`` of the same
    detections, when the caller has already run it."""
    reader = NumberReader.of(reader)
    records = split.records
    metrics = coco_metrics(split.coco(), split_results(split, detections), evaluator)
    numbers = [read_number(det, reader) for det in detections]
    metrics["task2_accuracy"] = task2_accuracy(records, numbers)
    metrics["task2_by_length"] = task2_by_length(records, numbers)
    metrics["images"] = len(records)
    metrics["task2_reader"] = reader.as_dict()
    return metrics


def task2_by_length(records: Sequence[ImageRecord], numbers: Sequence[str]) -> dict[int, dict[str, Any]]:
    """Task 2 accuracy by the true number's digit count (0: images with no digit)."""
    rows: dict[int, dict[str, Any]] = {}
    for record, number in zip(records, numbers):
        row = rows.setdefault(len(record.boxes), {"images": 0, "correct": 0})
        row["images"] += 1
        row["correct"] += record.number == number
    for row in rows.values():
        row["accuracy"] = row["correct"] / row["images"]
    return dict(sorted(rows.items()))


SWEEP_ANCHORS = tuple(round(0.05 * k, 2) for k in range(1, 20))
SWEEP_MEMBERS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# --sweep-task2 and the report's task2_sweep.csv: one-line readers, every anchor with the members up to it.
SWEEP_READERS = tuple(NumberReader(anchor, member) for anchor in SWEEP_ANCHORS
                      for member in sorted({m for m in SWEEP_MEMBERS if m < anchor} | {anchor}))


def task2_sweep(records: Sequence[ImageRecord], detections: Sequence[dict[str, list]],
                readers: Sequence[NumberReader] = SWEEP_READERS) -> dict[NumberReader, float]:
    """Task 2 accuracy with each reader (the detections are computed once)."""
    return {r: task2_accuracy(records, [read_number(d, r) for d in detections]) for r in readers}


def best_reader(sweep: dict[NumberReader, float]) -> NumberReader:
    """The most accurate reader of a sweep; of equals, the anchor nearest 0.5, then the member nearest
    the anchor (a rule fixed in advance, so a tie never picks the reader a later test would favour)."""
    return max(sweep, key=lambda r: (sweep[r], -abs(r.anchor - 0.5), -(r.anchor - r.member)))


def crops_holding_a_number(records: Sequence[ImageRecord], detections: Sequence[dict[str, list]]
                           ) -> tuple[list[ImageRecord], list[dict[str, list]]]:
    """The images that hold a number and that the model read as crops, not photos (``detect``'s ``photo``)."""
    kept = [(r, d) for r, d in zip(records, detections) if r.boxes and not d.get("photo")]
    return [r for r, _ in kept], [d for _, d in kept]


@dataclass(frozen=True)
class ReaderSweeps:
    """``task2_sweep`` of one detection pass on every image and on the crops that hold a number (None when there
    are none), with what :meth:`pick` needs besides."""
    everything: dict[NumberReader, float]
    crops: dict[NumberReader, float] | None
    crop_count: int  # images that hold a number and were read as crops
    has_photos: bool

    def pick(self) -> NumberReader:
        """The Task 2 reader a validation split picks. Crops get the best reader on the crops that hold a number:
        a crop is a picture of a number (every SVHN image holds one), so a digit-free image only pushes their
        scores up, and real digits score lower than synthetic ones. Photos, which are mostly wall, get the best on
        every image, where a number read from a digit-free image counts against a reader."""
        overall = best_reader(self.everything)
        if not self.crops:
            return overall
        crop = best_reader(self.crops)
        return crop if crop == overall or not self.has_photos else replace(crop, photos=overall)

    def on_crops(self, reader: NumberReader) -> float | None:
        return None if self.crops is None else self.crops[reader]


def reader_sweeps(records: Sequence[ImageRecord], detections: Sequence[dict[str, list]],
                  everything: dict[NumberReader, float] | None = None) -> ReaderSweeps:
    """Both sweeps of :class:`ReaderSweeps`; ``everything``: the sweep on every image, when already run."""
    crop_records, crop_detections = crops_holding_a_number(records, detections)
    return ReaderSweeps(task2_sweep(records, detections) if everything is None else everything,
                        task2_sweep(crop_records, crop_detections) if crop_records else None,
                        len(crop_records), any(d.get("photo") for d in detections))


def format_report(metrics: dict[str, Any]) -> str:
    def fmt(v):
        return "  n/a" if v is None else f"{v:.4f}"

    lines = ["Task 1 (COCO bbox):"]
    labels = {"mAP": "AP @[.5:.95]", "AP50": "AP @.50", "AP75": "AP @.75", "AP_small": "AP small",
              "AP_medium": "AP medium", "AP_large": "AP large", "AR_1": "AR maxDets=1", "AR_10": "AR maxDets=10",
              "AR_100": "AR maxDets=100", "AR_small": "AR small", "AR_medium": "AR medium", "AR_large": "AR large"}
    for name in STAT_NAMES:
        lines.append(f"  {labels[name]:<15} {fmt(metrics.get(name))}")
    lines.append("  per-class AP:  " + "  ".join(f"{k}:{fmt(v).strip()}" for k, v in metrics["per_class_AP"].items()))
    skipped = metrics.get("skipped_images")
    lines.append(f"Task 2 (whole-number accuracy): {metrics['task2_accuracy']:.4f} on {metrics['images']} images"
                 + (f" ({skipped} more not scored: --skip-invalid dropped them)" if skipped else ""))
    if metrics.get("task2_by_length"):
        lines.append("  by number length: " + "  ".join(
            f"{n}-digit {row['accuracy']:.3f} ({row['correct']}/{row['images']})"
            for n, row in metrics["task2_by_length"].items()))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    from core.config import HelpFormatter
    from core.predict import DEFAULT_CHECKPOINT, add_reader_arguments

    parser = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--ckpt", default=DEFAULT_CHECKPOINT, help="checkpoint (.pt) to score")
    parser.add_argument("--data", required=True, help="dataset folder (course layout)")
    parser.add_argument("--split", default="valid", help="split to score: valid, test (needs test.json) or train")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_reader_arguments(parser)
    parser.add_argument("--input-size", default=None,
                        help="'auto' (the checkpoint's own policy, the default) or a fixed short side in px "
                             "for the first pass")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="also write the error analysis to DIR: metrics.json, per_class.csv, confusion.csv, "
                             "pr.csv, task2_sweep.csv, errors.csv and PNG figures (core/report.py)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="score the images without problems when some are unreadable or badly labelled (each "
                             "dropped image is listed) instead of refusing the split")
    parser.add_argument("--sweep-task2", action="store_true",
                        help="also try one-line readers (anchors 0.05..0.95, members 0.3..0.9) and print the best one")
    return parser


def _sweep_readers(records, detections, split_name: str, metrics: dict, reader: NumberReader, ckpt: str) -> dict:
    """Every one-line reader's Task 2 accuracy on the split, the best printed and added to ``metrics`` with
    the pick a training run would record (:meth:`ReaderSweeps.pick`); ``reader``: the one in use, whose extra scores
    (gap, single) the sweep does not try."""
    sweeps = reader_sweeps(records, detections)
    sweep, best, pick = sweeps.everything, best_reader(sweeps.everything), sweeps.pick()
    extras = {k: v for k, v in reader.as_dict().items() if k in ("gap", "single")}
    if extras:
        print("the sweep tries anchor and member alone: the reader in use also has "
              + ", ".join(f"{k} {v:.2f}" for k, v in extras.items()) + ", which --task2-reader A,M would not keep")
    print("Task 2 accuracy by anchor (member = anchor): "
          + "  ".join(f"{r.anchor:.2f}:{a:.4f}" for r, a in sweep.items() if r.member == r.anchor))
    print(f"best Task 2 reader on {split_name}: anchor {best.anchor:.2f}, member {best.member:.2f} ({sweep[best]:.4f})")
    print(_pick_note(pick, sweeps, split_name, ckpt))
    metrics["task2_sweep"] = [{**r.as_dict(), "task2_accuracy": a, "crops_with_number_accuracy": sweeps.on_crops(r)}
                              for r, a in sweep.items()]
    metrics["task2_best_reader"] = best.as_dict()
    metrics["task2_reader_pick"] = pick.as_dict()
    return sweep


def _pick_note(pick: NumberReader, sweeps: ReaderSweeps, split_name: str, ckpt: str) -> str:
    """What ``ReaderSweeps.pick`` picked, where, and the export of ``ckpt`` that records it."""
    export = f"python -m core.checkpoint export {ckpt} OUT.pt --task2-reader {pick.anchor:.2f},{pick.member:.2f}"
    if sweeps.crops is None:
        return f"picked as a training run picks it (no crop on {split_name} holds a number: every image); record it " \
               f"with {export}"
    text = (f"picked as a training run picks it: anchor {pick.anchor:.2f}, member {pick.member:.2f}, the best on the "
            f"{sweeps.crop_count} crops that hold a number ({sweeps.crops[replace(pick, photos=None)]:.4f} of them "
            f"read right; digit-free crops do not count, as every course image holds a number)")
    if pick.photos is not None:
        text += (f"; photos read with anchor {pick.photos.anchor:.2f}, member {pick.photos.member:.2f}, the best "
                 f"reader above ({sweeps.everything[pick.photos]:.4f} on every image)")
        export += f" --photo-reader {pick.photos.anchor:.2f},{pick.photos.member:.2f}"
    return f"{text}; record it with {export}"


def main(argv: list[str] | None = None) -> int:
    from core.browse import find_splits, why_not_a_dataset
    from core.checkpoint import CheckpointError, atomic_write_text
    from core.outputs import check_output_dir, check_output_file
    from core.predict import load_model, parse_input_size, reader_from_arguments

    parser = _parser()
    args = parser.parse_args(argv)
    if args.split not in ("train", "valid", "test"):
        parser.error(f"--split {args.split!r}: choose train, valid or test")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    try:
        check_output_file(args.json, "--json")
        check_output_dir(args.report, "--report")
        input_size = parse_input_size(args.input_size)
        split = load_split(args.data, args.split, skip_invalid=args.skip_invalid)
        loaded = load_model(args.ckpt, args.device)
        reader = reader_from_arguments(args, loaded)
    except (DatasetError, CheckpointError, ValueError) as exc:
        print(f"core.evaluate: error: {exc}", file=sys.stderr)
        if isinstance(exc, DatasetError) and os.path.isdir(args.data) and not find_splits(args.data):
            print(f"core.evaluate: {why_not_a_dataset(args.data, args.data).replace('`', '')}", file=sys.stderr)
        elif isinstance(exc, DatasetError) and exc.skippable:
            print("core.evaluate: --skip-invalid scores the other images", file=sys.stderr)
        return 2
    if split.dropped:
        print(f"core.evaluate: {split.dropped_note()}", file=sys.stderr, flush=True)
    if split.warnings:
        print(f"core.evaluate: {len(split.warnings)} warning(s) about {args.split}, scored as it is:\n  "
              + "\n  ".join(listed(split.warnings)), file=sys.stderr, flush=True)
    print(f"core.evaluate: {loaded.meta.get('arch')} from {args.ckpt} on {loaded.device}; "
          f"{len(split.records)} {args.split} images; {loaded.inference_note(input_size)}; "
          f"Task 2: {reader.describe()}", flush=True)
    started = time.perf_counter()
    # Detections once; the Task 2 sweep re-reads the same detections with each reader.
    detections = detect_split(loaded.model, split, loaded.device, args.batch_size, input_size=input_size)
    metrics = score_detections(split, detections, reader)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    sweep = None
    if args.sweep_task2:
        sweep = _sweep_readers(split.records, detections, args.split, metrics, reader, args.ckpt)
    metrics.update({"checkpoint": args.ckpt, "data": args.data, "split": args.split,
                    "inference": loaded.inference_note(input_size), "skipped_images": split.dropped})
    print(format_report(metrics))
    print(f"({metrics['seconds']:.1f} s, {metrics['seconds'] / max(metrics['images'], 1) * 1000:.0f} ms/image)")
    if args.report:
        from core.report import build_report, write_report

        report = build_report(split, detections, reader, metrics["seconds"],
                              {k: metrics[k] for k in ("checkpoint", "data", "split", "inference")}, sweep)
        write_report(report, args.report)
        print(f"report: {args.report} ({len(report.errors)} image(s) read wrong, listed worst first in errors.csv)")
    if args.json:
        atomic_write_text(args.json, json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
