"""torchrun with two CPU processes on the gloo backend, through the same engine."""

import json
import os
import subprocess
import sys

from conftest import ROOT, TINY_ARCH
from core.events import read_events


def test_torchrun_two_cpu_processes(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "core.train", "--data", tiny_data, "--out", str(out), *TINY_ARCH, "--epochs", "2",
           "--subset-fraction", "1.0", "--batch-size", "2", "--lr", "1e-3", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    events = read_events(str(out / "log.jsonl"))
    start = next(e for e in events if e["event"] == "start")
    assert start["world_size"] == 2
    assert [e["event"] for e in events].count("start") == 1, "only rank 0 logs"
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    # 16 images, 2 per batch, 8 batches shared by 2 ranks: every image once per epoch.
    assert all(h["images"] == 16 for h in history)
    progress = [e for e in events if e["event"] == "progress" and e["epoch"] == 1]
    assert progress[-1]["total"] == 4, "each rank runs half of the batches"
    assert (out / "best.pt").exists() and (out / "last.pt").exists()
    assert not list(out.glob("*.tmp")), "no stray temporary files from other ranks"


def test_torchrun_with_a_missing_image(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "train" / "3.png").unlink()
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONUNBUFFERED="1")
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "core.train", "--data", str(data), *TINY_ARCH, "--epochs", "1",
            "--subset-fraction", "1.0", "--batch-size", "2", "--lr", "1e-3", "--device", "cpu"]

    # Without --skip-invalid every rank stops with the report, not a lost connection.
    proc = subprocess.run(base + ["--out", str(tmp_path / "strict")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "core.train (rank 0): error:" in proc.stderr and "core.train (rank 1): error:" in proc.stderr
    assert "3.png" in proc.stderr and "missing" in proc.stderr

    # With it, both ranks drop the same image and train on the same 15.
    out = tmp_path / "skip"
    proc = subprocess.run(base + ["--out", str(out), "--skip-invalid"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    start = next(e for e in read_events(str(out / "log.jsonl")) if e["event"] == "start")
    assert start["train_images"] == 15 and start["dropped"] == 1
    assert json.loads((out / "history.json").read_text())[0]["epoch"] == 1
