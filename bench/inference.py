"""Inference speed of the shipped model against the reference configuration, on the same images.

    python bench/inference.py [--ckpt checkpoints/default.pt] [--data DIR] [--images 200]

The reference is fasterrcnn_resnet50_fpn_v2 at torchvision's defaults (min_size 800,
max_size 1333, 1000 test proposals). It is untrained here (no weights can be downloaded),
so its mAP only shows the code path; its speed is what matters. Both run one image at a
time (latency) in the same process, one after the other, on the same images.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from common import ROOT, median_ms, validation_images
from core.evaluate import coco_metrics
from core.images import decode_image
from core.model import build_model
from core.predict import coco_results, detect, load_model, pick_device


def measure(model, images, device, label):
    detect(model, images[:2], batch_size=1, device=device)  # warm-up: allocator, oneDNN kernels
    latencies, detections = [], []
    started = time.perf_counter()
    for image in images:
        t = time.perf_counter()
        detections += detect(model, [image], batch_size=1, device=device)
        latencies.append(time.perf_counter() - t)
        if len(latencies) % 20 == 0:
            print(f"  {label}: {len(latencies)}/{len(images)} images, median {median_ms(latencies):.0f} ms", flush=True)
    total = time.perf_counter() - started
    return {"images_per_s": len(images) / total, "median_ms": median_ms(latencies), "detections": detections}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=f"{ROOT}/checkpoints/default.pt", help="the shipped model")
    parser.add_argument("--data", default=None, help="dataset whose valid split to use (default: synthetic)")
    parser.add_argument("--images", type=int, default=200, help="number of validation images")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--skip-reference", action="store_true", help="only time the shipped model")
    args = parser.parse_args()
    device = pick_device(args.device)
    split = validation_images(args.data, args.images, f"{ROOT}/data")
    images = [decode_image(r.path) for r in split.records]
    gt = split.coco()
    print(f"bench/inference: {len(images)} images, device {device}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}", flush=True)

    rows = []
    started = time.perf_counter()
    shipped = load_model(args.ckpt, device)
    load_seconds = time.perf_counter() - started
    size_mb = __import__("os").path.getsize(args.ckpt) / 1e6
    print(f"  shipped checkpoint: {size_mb:.1f} MB, loaded in {load_seconds:.2f} s", flush=True)
    result = measure(shipped.model, images, device, "shipped")
    rows.append(("shipped " + shipped.meta["arch"], result))
    if not args.skip_reference:
        torch.manual_seed(0)
        reference, _, note = build_model("fasterrcnn_resnet50_fpn_v2", weights="auto")
        reference.eval().to(device)
        print(f"  reference: {note}", flush=True)
        rows.append(("reference fasterrcnn_resnet50_fpn_v2 (800/1333)", measure(reference, images, device, "reference")))

    print()
    print(f"{'configuration':<48} {'images/s':>9} {'median ms/image':>16} {'mAP':>7} {'AP50':>7}")
    for name, r in rows:
        results = [d for record, det in zip(split.records, r["detections"]) for d in coco_results(record.image_id, det)]
        metrics = coco_metrics(gt, results)
        r["mAP"] = metrics["mAP"]
        print(f"{name:<48} {r['images_per_s']:>9.2f} {r['median_ms']:>16.1f} {metrics['mAP']:>7.3f} {metrics['AP50']:>7.3f}")
    if len(rows) == 2:
        speedup = rows[0][1]["images_per_s"] / rows[1][1]["images_per_s"]
        latency = rows[1][1]["median_ms"] / rows[0][1]["median_ms"]
        print(f"\nshipped / reference: {speedup:.1f}x images/s, {latency:.1f}x lower median latency")


if __name__ == "__main__":
    main()
