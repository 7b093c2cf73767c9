"""Inference speed of the shipped model against the reference configuration, on the same images.

    python bench/inference.py [--ckpt checkpoints/default.pt] [--data DIR --split test] [--images 200] [--photos 30]

Two image sets: ``--images`` images of a dataset split (default: a synthetic validation split;
pass the real dev set with ``--data ../shared/real-dev/svhn-test-grey-1000 --split test``) and
``--photos`` rendered 1280x720 street photos with a house-number plate (core.synth.render_photo_scene).
The reference is fasterrcnn_resnet50_fpn_v2 at torchvision's defaults (min_size 800,
max_size 1333, 1000 test proposals), timed on the first ``--reference-images`` of each set (it
takes seconds per image on a CPU). It is untrained here (no weights can be downloaded), so its
mAP only shows the code path; its speed is what matters. Everything runs one image at a time
(latency), in the same process, one after the other, on the same images. Both are made cheap to run the
same way (core.model.prepare_for_inference: BatchNorms folded, channels-last weights).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from common import ROOT, median_ms, validation_images
from core import synth
from core.data import load_split
from core.evaluate import coco_metrics
from core.images import decode_image
from core.model import build_model, prepare_for_inference
from core.predict import coco_results, detect, load_model, pick_device

PHOTO_SIZE = (1280, 720)


def measure(model, images, device, label):
    detect(model, images[:2], batch_size=1, device=device)  # warm-up: allocator, oneDNN kernels
    latencies, detections = [], []
    started = time.perf_counter()
    for image in images:
        t = time.perf_counter()
        detections += detect(model, [image], batch_size=1, device=device)
        latencies.append(time.perf_counter() - t)
        if len(latencies) % 50 == 0:
            print(f"  {label}: {len(latencies)}/{len(images)} images, median {median_ms(latencies):.0f} ms", flush=True)
    total = time.perf_counter() - started
    return {"images_per_s": len(images) / total, "median_ms": median_ms(latencies), "detections": detections}


def photos(count: int) -> list:
    fonts = synth.usable_fonts()
    out = []
    for index in range(1, count + 1):
        rng, np_rng = synth.sample_rngs(4242, "bench-photo", index)
        out.append(synth.render_photo_scene(rng, fonts, np_rng)[0].resize(PHOTO_SIZE))
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=f"{ROOT}/checkpoints/default.pt", help="the shipped model")
    parser.add_argument("--data", default=None, help="dataset to time on (default: a synthetic validation split)")
    parser.add_argument("--split", default="valid", help="its split (default valid)")
    parser.add_argument("--images", type=int, default=200, help="number of dataset images")
    parser.add_argument("--photos", type=int, default=30, help="number of 1280x720 photos (0: none)")
    parser.add_argument("--reference-images", type=int, default=20, help="images per set for the slow reference")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--skip-reference", action="store_true", help="only time the shipped model")
    return parser


def _dataset_split(data: str | None, split_name: str, count: int):
    if data is None:
        return validation_images(None, count, f"{ROOT}/data")
    split = load_split(data, split_name)
    split.records = split.records[:count]
    return split


def _load_models(ckpt: str, device, skip_reference: bool):
    """The shipped model, timed as it loads, and the reference (None when skipped)."""
    started = time.perf_counter()
    shipped = load_model(ckpt, device)
    load_seconds = time.perf_counter() - started
    print(f"  shipped checkpoint: {os.path.getsize(ckpt) / 1e6:.1f} MB, loaded in {load_seconds:.2f} s; "
          f"{shipped.inference_note()}", flush=True)
    if skip_reference:
        return shipped, None
    torch.manual_seed(0)
    reference, _, note = build_model("fasterrcnn_resnet50_fpn_v2", weights="auto")
    reference = prepare_for_inference(reference.to(device))  # made as cheap to run as load_model makes ours
    print(f"  reference: {note}", flush=True)
    return shipped, reference


def _print_table(rows: list) -> None:
    print()
    print(f"{'images':<9} {'configuration':<40} {'n':>4} {'images/s':>9} {'median ms/image':>16} {'mAP':>6}")
    for set_name, name, n, r in rows:
        m_ap = f"{r['mAP']:.3f}" if "mAP" in r else "-"
        print(f"{set_name:<9} {name:<40} {n:>4} {r['images_per_s']:>9.2f} {r['median_ms']:>16.1f} {m_ap:>6}")
    for set_name in ("dataset", "photos"):
        pair = [r for s, _, _, r in rows if s == set_name]
        if len(pair) == 2:
            print(f"{set_name}: shipped median latency {pair[1]['median_ms'] / pair[0]['median_ms']:.1f}x lower "
                  f"than the reference's")


def main() -> None:
    args = _parser().parse_args()
    device = pick_device(args.device)
    split = _dataset_split(args.data, args.split, args.images)
    images = [decode_image(r.path, exif_transpose=False) for r in split.records]
    print(f"bench/inference: {len(images)} images of {args.data or 'synthetic valid'} ({args.split}), "
          f"{args.photos} photos {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}; device {device}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}", flush=True)
    photo_images = photos(args.photos)
    shipped, reference = _load_models(args.ckpt, device, args.skip_reference)
    rows = []
    for set_name, set_images in (("dataset", images), ("photos", photo_images)):
        if not set_images:
            continue
        result = measure(shipped.model, set_images, device, f"shipped, {set_name}")
        if set_name == "dataset":
            results = [d for record, det in zip(split.records, result["detections"])
                       for d in coco_results(record.image_id, det)]
            result["mAP"] = coco_metrics(split.coco(), results)["mAP"]
        rows.append((set_name, "shipped " + shipped.meta["arch"], len(set_images), result))
        if reference is not None:
            subset = set_images[:args.reference_images]
            rows.append((set_name, "reference resnet50_fpn_v2 (800/1333)", len(subset),
                         measure(reference, subset, device, f"reference, {set_name}")))
    _print_table(rows)


if __name__ == "__main__":
    main()
