"""How long pycocotools takes to score a validation set of the course's size (3,340 images).

    python bench/eval_speed.py [--images 3340] [--per-image 20]

Ground truth comes from the synthetic generator's boxes; detections are the true boxes
jittered plus low-score false positives, about as many per image as the shipped model keeps.
Only the scoring (core.evaluate.coco_metrics: loadRes, evaluate, accumulate) is timed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from common import ROOT
from core.data import categories
from core.evaluate import coco_metrics
from core.synth import generate_sample, usable_fonts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3340)
    parser.add_argument("--per-image", type=int, default=20, help="detections per image")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    fonts = usable_fonts()
    rng = random.Random(0)
    images, annotations, results = [], [], []
    for image_id in range(1, args.images + 1):
        image, boxes = generate_sample(777, "valid", image_id, fonts)
        images.append({"id": image_id, "width": image.size[0], "height": image.size[1], "file_name": f"{image_id}.png"})
        for x, y, w, h, digit in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0, "category_id": digit + 1})
            jitter = [v + rng.gauss(0, 0.05 * h) for v in (x, y)] + [w * rng.uniform(0.9, 1.1), h * rng.uniform(0.9, 1.1)]
            results.append({"image_id": image_id, "bbox": jitter, "score": rng.uniform(0.5, 1.0), "category_id": digit + 1})
        for _ in range(max(0, args.per_image - len(boxes))):
            w, h = rng.uniform(3, image.size[0] / 2), rng.uniform(5, image.size[1])
            results.append({"image_id": image_id, "bbox": [rng.uniform(0, image.size[0] - w), rng.uniform(0, image.size[1] - h), w, h],
                            "score": rng.uniform(0.01, 0.3), "category_id": rng.randint(1, 10)})
    gt = {"info": {}, "images": images, "annotations": annotations, "categories": categories()}
    print(f"bench/eval_speed: {len(images)} images, {len(annotations)} ground-truth boxes, {len(results)} detections")
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        metrics = coco_metrics(gt, results)
        seconds.append(time.perf_counter() - start)
    print(f"pycocotools scoring: median {statistics.median(seconds):.2f} s over {args.repeats} runs "
          f"(min {min(seconds):.2f}, max {max(seconds):.2f}); mAP of the jittered boxes {metrics['mAP']:.3f}")


if __name__ == "__main__":
    main()
