"""The whole chain as a user runs it: synth -> train 1 epoch -> evaluate -> predict, in under a minute."""

import csv
import json
import os
import subprocess
import sys
import time

from conftest import ROOT, TINY_ARCH


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def test_tiny_pipeline_end_to_end(tmp_path):
    started = time.perf_counter()
    data, run, pred = tmp_path / "data", tmp_path / "run", tmp_path / "pred"
    _cli("core.synth", "--out", str(data), "--train", "16", "--valid", "6", "--test", "6", "--seed", "9")
    out = _cli("core.train", "--data", str(data), "--out", str(run), *TINY_ARCH, "--epochs", "1",
               "--subset-fraction", "1.0", "--batch-size", "4", "--lr", "1e-3", "--device", "cpu")
    assert "epoch 1/1" in out and "completed" in out
    out = _cli("core.evaluate", "--ckpt", str(run / "best.pt"), "--data", str(data), "--split", "test",
               "--json", str(tmp_path / "metrics.json"))
    assert "AP @[.5:.95]" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == 6
    _cli("core.predict", "--ckpt", str(run / "best.pt"), "--images", str(data / "test"), "--out", str(pred))
    rows = list(csv.reader(open(pred / "pred.csv")))
    assert rows[0] == ["image_id", "pred_label"] and len(rows) == 7
    assert isinstance(json.loads((pred / "pred.json").read_text()), list)
    assert time.perf_counter() - started < 60
