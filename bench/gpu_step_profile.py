"""Where a digitnet_fpn training step and an inference pass spend their time on a GPU.

    python bench/gpu_step_profile.py [--images 640] [--weights checkpoints/default.pt]

Batches are loaded into memory first, so the figures are the model's alone (no data loading):
training images/s at batch 32 and 64 with and without AMP, the torch profiler's top operators
for three AMP steps, and detection ms/image with the app's reader (core.predict.detect).
On a machine without CUDA it runs on the CPU with batch 4 (a dry run of the script).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from PIL import Image
from torch.profiler import ProfilerActivity, profile

from common import ROOT  # noqa: F401  (puts the repository on sys.path)
from core.batches import DigitDataset, collate, train_transforms
from core.data import load_split
from core.model import build_model
from core.predict import detect
from core.synth import generate_dataset, usable_fonts


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(model, optimizer, scaler, images, targets, device, amp: bool) -> None:
    images = [i.to(device) for i in images]
    targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        loss = sum(model(images, targets).values())
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=640, help="synthetic training images to render")
    parser.add_argument("--weights", default="checkpoints/default.pt")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch_sizes = (32, 64) if device.type == "cuda" else (4,)
    data = tempfile.mkdtemp(prefix="gpu-profile-")
    generate_dataset(data, {"train": args.images, "valid": 0}, seed=3, workers=os.cpu_count() or 1,
                     fonts=usable_fonts(), overwrite=True)
    dataset = DigitDataset(load_split(data, "train").records, train_transforms())
    model, _, _ = build_model("digitnet_fpn", {}, weights=args.weights)
    model.to(device, memory_format=torch.channels_last).train()  # as core.train lays it out
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    for batch_size in batch_sizes:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate,
                                             num_workers=min(8, os.cpu_count() or 1))
        batches = [b for _, b in zip(range(10), loader)]
        for amp in (True, False):
            scaler = torch.amp.GradScaler(device.type, enabled=amp)
            times = []
            for images, targets in batches:
                start = time.perf_counter()
                train_step(model, optimizer, scaler, images, targets, device, amp)
                sync(device)
                times.append(time.perf_counter() - start)
            step = statistics.median(times[2:])
            print(f"batch {batch_size} amp {amp}: median step {step * 1000:.0f} ms = {batch_size / step:.0f} images/s",
                  flush=True)
    scaler = torch.amp.GradScaler(device.type)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])) as prof:
        for _ in range(3):
            train_step(model, optimizer, scaler, *batches[0], device, amp=True)
        sync(device)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=20, max_name_column_width=60))
    model.eval()
    pictures = [Image.open(r.path).convert("RGB") for r in dataset.records[:200]]
    start = time.perf_counter()
    detect(model, pictures, 32, device)
    sync(device)
    print(f"detect: {(time.perf_counter() - start) / len(pictures) * 1000:.1f} ms/image over {len(pictures)} images")
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])) as prof:
        detect(model, pictures[:64], 32, device)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=60))


if __name__ == "__main__":
    main()
