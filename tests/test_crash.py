"""Crashes and interruptions lose nothing: SIGKILL at exact points, then --resume."""

import errno
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY_ARCH, tiny_config
from core.checkpoint import atomic_write_bytes, load_checkpoint
from core.events import read_events
from core import checkpoint as checkpoint_mod, train as train_mod
from core.train import run

ARGS = [*TINY_ARCH, "--epochs", "3", "--subset-fraction", "0.5", "--batch-size", "4", "--lr", "1e-3",
        "--device", "cpu", "--scheduler", "cosine", "--seed", "1"]
# 16 training images, half per epoch, 4 per batch: 2 optimisation steps per epoch.
FAILPOINTS = {
    "during an epoch": "step@3",           # first step of epoch 2
    "during evaluation": "eval@2",         # evaluating epoch 2
    "writing best.pt": "write:best.pt@1",  # epoch 1 is always the best so far: dies before any last.pt
    "writing last.pt": "write:last.pt@2",
    "writing history.json": "write:history.json@2",
    "part-way through last.pt's bytes": "writing:last.pt@300",  # epoch 1's last.pt, 300th write() call
}


def _train(data, out, *extra, failpoint=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("DIGIT_STUDIO_FAILPOINT", None)
    if failpoint:
        env["DIGIT_STUDIO_FAILPOINT"] = failpoint
    return subprocess.run([sys.executable, "-m", "core.train", "--data", data, "--out", str(out), *ARGS, *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("crash") / "reference"
    proc = _train(tiny_data, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "history.json").read_text())


def _same(a, b):
    assert [h["epoch"] for h in a] == [h["epoch"] for h in b]
    for x, y in zip(a, b):
        for key in ("lr", "loss", "loss_classifier", "loss_box_reg", "mAP", "AP50", "AP75", "task2_accuracy"):
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-7), (x["epoch"], key)


@pytest.mark.parametrize("where", sorted(FAILPOINTS))
def test_sigkill_then_resume_matches_an_uninterrupted_run(where, tiny_data, tmp_path, reference):
    out = tmp_path / "run"
    killed = _train(tiny_data, out, failpoint=FAILPOINTS[where])
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])

    if where == "part-way through last.pt's bytes":
        partial = [f for f in out.iterdir() if f.name.endswith(".tmp")]
        assert len(partial) == 1 and partial[0].stat().st_size > 0, "the kill landed inside the write"
    # Whatever the moment, what is on disk is whole and consistent.
    if (out / "last.pt").exists():
        last = load_checkpoint(str(out / "last.pt"))
        best = load_checkpoint(str(out / "best.pt"))
        assert last["epoch"] in (1, 2) and best["epoch"] <= last["epoch"] + 1
        assert [h["epoch"] for h in last["history"]] == list(range(1, last["epoch"] + 1))
        epochs = [h["epoch"] for h in json.loads((out / "history.json").read_text())]
        assert epochs == sorted(set(epochs)), "every finished epoch exactly once"
    else:  # killed in epoch 1: at most its best.pt, written first, is there, and whole
        assert not (out / "history.json").exists()
        if (out / "best.pt").exists():
            assert load_checkpoint(str(out / "best.pt"))["epoch"] == 1
        assert (out / "best.pt").exists() == (where == "part-way through last.pt's bytes")

    resumed = _train(tiny_data, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")], "stale temporaries are cleaned up"
    final = json.loads((out / "history.json").read_text())
    _same(reference, final)
    _same(reference, load_checkpoint(str(out / "last.pt"))["history"])
    events = read_events(str(out / "log.jsonl"))
    assert [e["epoch"] for e in events if e["event"] == "epoch"].count(3) == 1


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"previous version")

    def broken(handle):
        handle.write(b"half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_bytes(str(path), broken)
    assert path.read_bytes() == b"previous version"
    assert os.listdir(tmp_path) == ["last.pt"]


def test_full_disk_mid_run_is_an_error_event_and_keeps_what_was_saved(tiny_data, tmp_path, monkeypatch, capsys):
    real_save = train_mod.save_checkpoint
    calls = []

    def save_until_full(path, payload, half=False):
        calls.append(path)
        if len(calls) > 2:  # epoch 1 wrote best.pt and last.pt; the disk is full after that
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real_save(path, payload, half)

    monkeypatch.setattr(train_mod, "save_checkpoint", save_until_full)
    out = tmp_path / "full"
    assert run(tiny_config(tiny_data, str(out), epochs=3, scheduler="step"), stream=None) == 1
    error = read_events(str(out / "log.jsonl"))[-1]
    assert error["event"] == "error" and "No space left on device" in error["message"]
    assert "saved checkpoints are intact" in error["message"]
    assert load_checkpoint(str(out / "last.pt"))["epoch"] == 1
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1]


def test_unwritable_run_folder_fails_before_training(tiny_data, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert run(tiny_config(tiny_data, str(blocker / "run")), stream=None) == 2
    assert "cannot create run folder" in capsys.readouterr().err
    assert run(tiny_config(tiny_data, str(blocker)), stream=None) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert run(tiny_config(tiny_data, "/proc/digit-studio-run"), stream=None) == 2
    assert "cannot create run folder" in capsys.readouterr().err


@pytest.mark.parametrize("full_from", ["config.json", "history.json"])
def test_full_disk_at_any_run_file_is_a_clear_error(full_from, tiny_data, tmp_path, monkeypatch, capsys):
    """Every run file goes through atomic_write_bytes: the disk fills up at the first config.json
    (before any training) or at epoch 2's history.json (after its checkpoints)."""
    real_write = checkpoint_mod.atomic_write_bytes
    seen = []

    def write_until_full(path, writer):
        seen.append(os.path.basename(path))
        if os.path.basename(path) == full_from and seen.count(full_from) == (1 if full_from == "config.json" else 2):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real_write(path, writer)

    monkeypatch.setattr(checkpoint_mod, "atomic_write_bytes", write_until_full)
    out = tmp_path / "full"
    code = run(tiny_config(tiny_data, str(out), epochs=3, scheduler="step"), stream=None)
    err = capsys.readouterr().err
    if full_from == "config.json":
        assert code == 2 and "cannot write to run folder" in err and "No space left on device" in err
        assert not (out / "last.pt").exists() and not (out / "log.jsonl").exists()
    else:
        assert code == 1
        error = read_events(str(out / "log.jsonl"))[-1]
        assert error["event"] == "error" and "No space left on device" in error["message"]
        assert "history.json" in error["message"] and "saved checkpoints are intact" in error["message"]
        assert load_checkpoint(str(out / "last.pt"))["epoch"] == 2
        assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1]
        monkeypatch.setattr(checkpoint_mod, "atomic_write_bytes", real_write)  # space freed: resume
        assert run(tiny_config(tiny_data, str(out), epochs=3, resume=True), {"resume"}, stream=None) == 0
        assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2, 3]
