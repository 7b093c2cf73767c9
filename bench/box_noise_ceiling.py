"""The best mAP any detector can reach on a synthetic split: its boxes carry the SVHN convention's
per-box jitter (each margin drawn around its mean, as SVHN's annotators drew them), and no detector
can guess a random margin (generator v5: the digits of a number share one height, as in SVHN).

    python bench/box_noise_ceiling.py --data data/synth-v6-seed7 --split test [--ckpt FILE]

Renders the split's images again with ink-tight boxes (same seed, fonts and negatives: the same
images), boxes each digit's ink with the convention's mean margins, and scores those boxes (score 1,
the right digit) against the split's own boxes with core.evaluate's scorer. Prints the figures of
that perfect detector: its mAP is the ceiling a real model's synthetic test mAP is measured against.
With ``--ckpt``, also the model's mAP against the split's boxes and against the mean boxes (the
convention without the annotators' jitter).
"""

from __future__ import annotations

import argparse
import copy
import json
import os

from common import ROOT, timed_detections
from core import synth
from core.data import load_split
from core.evaluate import score_detections
from core.predict import load_model


def perfect_detections(data: str, split_name: str, records) -> list[dict[str, list]]:
    with open(os.path.join(data, "synth.json")) as handle:
        made = json.load(handle)
    fonts = synth.usable_fonts()
    if [os.path.basename(f) for f in fonts] != made["fonts"]:
        raise SystemExit(f"{data} was rendered with other fonts than this machine has: its images cannot be "
                         "rendered again")
    convention = synth.BoxConvention(**made["boxes"])  # as recorded: a version-4 split has no shared heights
    negatives = synth.Negatives(**made["negatives"])
    detections = []
    for record in records:
        image, ink = synth.generate_sample(made["seed"], split_name, record.image_id, fonts, "tight", negatives,
                                           made["letter_boxes"])
        if image.size != (record.width, record.height):
            raise SystemExit(f"image {record.image_id} renders at {image.size}, not as in {data}: another "
                             "generator version")
        ink = [box for box in ink if box[4] != synth.LETTER]  # letters are never scored
        boxes = convention.mean_number_boxes([(x, y, x + w, y + h) for x, y, w, h, _ in ink])
        boxes = [[max(0.0, x0), max(0.0, y0), min(image.size[0], x1), min(image.size[1], y1)]
                 for x0, y0, x1, y1 in boxes]
        detections.append({"boxes": boxes, "scores": [1.0] * len(boxes), "digits": [d for *_, d in ink]})
    return detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=f"{ROOT}/data/synth-v6-seed7")
    parser.add_argument("--split", default="test")
    parser.add_argument("--ckpt", default=None, help="also score this checkpoint against both sets of boxes")
    args = parser.parse_args()
    split = load_split(args.data, args.split)
    perfect = perfect_detections(args.data, args.split, split.records)
    metrics = score_detections(split, perfect, 0.5)
    print(f"{args.data} {args.split}: a detector that finds every digit, with its class and the convention's mean "
          f"box, scores mAP@[.5:.95] {metrics['mAP']:.3f}, AP50 {metrics['AP50']:.3f}, AP75 {metrics['AP75']:.3f}; "
          f"Task 2 {metrics['task2_accuracy']:.3f}")
    if args.ckpt:
        loaded = load_model(args.ckpt)
        detections, _ = timed_detections(loaded, split.records)
        mean_boxes = copy.deepcopy(split)
        for record, found in zip(mean_boxes.records, perfect):
            record.boxes = found["boxes"]
        for name, against in (("the split's boxes", split), ("the mean boxes", mean_boxes)):
            got = score_detections(against, detections, loaded.reader)
            print(f"{args.ckpt} against {name}: mAP@[.5:.95] {got['mAP']:.3f}, AP50 {got['AP50']:.3f}, "
                  f"AP75 {got['AP75']:.3f}; Task 2 {got['task2_accuracy']:.3f}")


if __name__ == "__main__":
    main()
