"""Training speed (images/s) of the shipped configuration and of the reference configuration.

    python bench/train_speed.py [--data DIR] [--steps 20] [--reference-steps 3]

Both use the trainer's own data pipeline (DigitDataset + augmentation), AdamW, and the
batch size printed beside each figure; the first steps are a warm-up and are not counted.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import ROOT, median_ms
from core.batches import DigitDataset, collate, epoch_batches, train_transforms
from core.data import load_split
from core.model import build_model
from core.predict import pick_device
from core.synth import generate_dataset, usable_fonts


def measure(arch, overrides, batch_size, steps, dataset, device, warmup=2):
    torch.manual_seed(0)
    model, _, _ = build_model(arch, overrides, weights="none")
    model.to(device, memory_format=torch.channels_last).train()  # as core.train lays it out
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=5e-4)
    batches = epoch_batches(dataset.aspect_ratios(), 1.0, batch_size, seed=0, epoch=1)[: steps + warmup]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate)
    times = []
    for index, (images, targets) in enumerate(loader):
        start = time.perf_counter()
        images = [i.to(device) for i in images]
        targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - start)
        print(f"  {arch}: step {index + 1}/{len(batches)} {time.perf_counter() - start:.2f} s", flush=True)
    per_step = sorted(times)[len(times) // 2]
    return {"images_per_s": batch_size / per_step, "median_step_ms": median_ms(times), "batch_size": batch_size,
            "steps": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="dataset with a train split (default: 2,000 synthetic images)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps for the shipped configuration")
    parser.add_argument("--reference-steps", type=int, default=3, help="timed steps for the reference")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    data = args.data or f"{ROOT}/data/bench-train-2000"
    if args.data is None and not __import__("os").path.exists(f"{data}/train.json"):
        generate_dataset(data, {"train": 2000, "valid": 0}, seed=54321, fonts=usable_fonts())
    dataset = DigitDataset(load_split(data, "train").records, train_transforms())
    print(f"bench/train_speed: device {device}, {torch.get_num_threads()} threads", flush=True)
    shipped = measure("digitnet_fpn", {}, 16, args.steps, dataset, device)
    reference = measure("fasterrcnn_resnet50_fpn_v2", {}, 2, args.reference_steps, dataset, device, warmup=1)
    print()
    print(f"{'configuration':<50} {'batch':>5} {'images/s':>9} {'median ms/step':>15}")
    for name, r in (("shipped digitnet_fpn (96-128 px)", shipped), ("reference fasterrcnn_resnet50_fpn_v2 (800/1333)", reference)):
        print(f"{name:<50} {r['batch_size']:>5} {r['images_per_s']:>9.2f} {r['median_step_ms']:>15.0f}")
    print(f"\nshipped / reference: {shipped['images_per_s'] / reference['images_per_s']:.0f}x training images/s")


if __name__ == "__main__":
    main()
