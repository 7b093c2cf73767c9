"""Where a digitnet_fpn training step and an inference pass spend their time on a GPU, and whether the
CPU's layout choices pay there too.

    python bench/gpu_step_profile.py [--images 640] [--weights checkpoints/default.pt]

Batches are loaded into memory first, so the figures are the model's alone (no data loading). Each
comparison runs its two sides alternately, step by step, in one process (like for like on a noisy
machine) and prints both medians and their ratio:
- training images/s at batch 32 and 64, float32 and AMP: weights contiguous against channels-last
  (core.train lays them out channels-last, which is 1.3x faster on a 2-core CPU);
- AdamW steps with Adam's moments laid out like their channels-last parameters against contiguous
  moments (what a checkpoint saved before the layout change resumes with; core.train._lay_out_like_params);
- detection ms/image with the app's reader (core.predict.detect): the model as built against
  core.model.prepare_for_inference (BatchNorm folded, channels-last), as core.predict.load_model serves it;
then the torch profiler's top operators for three float32 steps of the layout core.train uses.
On a machine without CUDA it runs on the CPU with batch 4 (a dry run of the script).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Callable

import torch
from PIL import Image
from torch.profiler import ProfilerActivity, profile

from common import ROOT  # noqa: F401  (puts the repository on sys.path)
from core.batches import DigitDataset, collate, train_transforms
from core.data import load_split
from core.model import build_model, prepare_for_inference
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


def alternate(sides: dict[str, Callable[[int], None]], rounds: int, device: torch.device,
              warmup: int = 2) -> dict[str, float]:
    """Median seconds of each side's call, the sides called in turn ``rounds`` times (the first
    ``warmup`` rounds not counted: cuDNN plans and the allocator settle there)."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(rounds):
        for name, call in sides.items():
            sync(device)
            start = time.perf_counter()
            call(i)
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t[warmup:] or t) for name, t in times.items()}


def report(title: str, medians: dict[str, float], per: int, unit: str) -> None:
    (a, ta), (b, tb) = medians.items()
    if unit == "images/s":
        print(f"{title}: {a} {per / ta:.0f}, {b} {per / tb:.0f} images/s ({b} {ta / tb:.2f}x)", flush=True)
    else:
        print(f"{title}: {a} {ta / per * 1000:.1f}, {b} {tb / per * 1000:.1f} ms/{unit} ({b} {ta / tb:.2f}x)",
              flush=True)


def compare_training_layouts(weights, batches_by_size, device) -> None:
    for batch_size, batches in batches_by_size.items():
        for amp in (False, True) if device.type == "cuda" else (False,):  # CPU float16 autocast: minutes
            sides = {}
            for layout in (torch.contiguous_format, torch.channels_last):
                model, _, _ = build_model("digitnet_fpn", {}, weights=weights)
                model.to(device, memory_format=layout).train()
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
                scaler = torch.amp.GradScaler(device.type, enabled=amp)
                name = "channels-last" if layout is torch.channels_last else "contiguous"
                sides[name] = (lambda i, m=model, o=optimizer, s=scaler:
                               train_step(m, o, s, *batches[i % len(batches)], device, amp))
            report(f"train, batch {batch_size}, {'AMP' if amp else 'float32'}",
                   alternate(sides, len(batches), device), batch_size, "images/s")


def compare_optimizer_state_layouts(weights, batch, device) -> None:
    """One real backward gives the gradients; then only optimizer.step() is timed."""
    sides = {}
    for moments in ("like the parameters", "contiguous"):
        model, _, _ = build_model("digitnet_fpn", {}, weights=weights)
        model.to(device, memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        train_step(model, optimizer, torch.amp.GradScaler(device.type, enabled=False), *batch, device, False)
        if moments == "contiguous":
            for state in optimizer.state.values():
                for key, value in state.items():
                    if torch.is_tensor(value) and value.dim() == 4:
                        state[key] = value.contiguous()
        sides[f"moments {moments}"] = lambda i, o=optimizer: o.step()
    report("AdamW step (channels-last weights)", alternate(sides, 30, device, warmup=5), 1, "step")


def compare_inference(weights, pictures, device) -> None:
    built, _, _ = build_model("digitnet_fpn", {}, weights=weights)
    prepared, _, _ = build_model("digitnet_fpn", {}, weights=weights)
    built.to(device).eval()
    prepare_for_inference(prepared.to(device))
    chunks = [pictures[i:i + 25] for i in range(0, len(pictures), 25)]
    sides = {"as built": lambda i: detect(built, chunks[i % len(chunks)], 32, device),
             "prepared": lambda i: detect(prepared, chunks[i % len(chunks)], 32, device)}
    with torch.inference_mode():
        report("detect", alternate(sides, 2 * len(chunks), device, warmup=len(chunks)), 25, "image")


def profile_steps(weights, batch, device) -> None:
    model, _, _ = build_model("digitnet_fpn", {}, weights=weights)
    model.to(device, memory_format=torch.channels_last).train()  # as core.train lays it out
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    train_step(model, optimizer, scaler, *batch, device, amp=False)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            train_step(model, optimizer, scaler, *batch, device, amp=False)
        sync(device)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15, max_name_column_width=60))


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
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device {name}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    batches_by_size = {}
    for batch_size in batch_sizes:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate,
                                             num_workers=min(8, os.cpu_count() or 1))
        batches_by_size[batch_size] = [b for _, b in zip(range(10), loader)]
    first = batches_by_size[batch_sizes[0]][0]
    compare_training_layouts(args.weights, batches_by_size, device)
    compare_optimizer_state_layouts(args.weights, first, device)
    compare_inference(args.weights, [Image.open(r.path).convert("RGB") for r in dataset.records[:200]], device)
    profile_steps(args.weights, first, device)


if __name__ == "__main__":
    main()
