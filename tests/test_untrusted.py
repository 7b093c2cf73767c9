"""Untrusted checkpoints: loaded with weights_only=True everywhere, refused with a clear message."""

import os
import random
import shutil

import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import ROOT, TINY_ARCH, tiny_config
from core.checkpoint import CheckpointError, load_checkpoint, main as checkpoint_main, save_checkpoint
from core.evaluate import main as evaluate_main
from core.model import ModelError, build_model
from core.predict import load_model, main as predict_main
from core.config import parse_args
from core.train import run


class _CreatesAFile:
    """Unpickling this (with full pickle) would create ``path``: a stand-in for arbitrary code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture()
def evil(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({"format": "digit-studio-checkpoint", "arch": "digitnet_fpn", "model": {},
                "payload": _CreatesAFile(str(marker))}, path)
    assert not marker.exists()
    return str(path), marker


def test_checkpoint_loader_refuses(evil):
    path, marker = evil
    with pytest.raises(CheckpointError, match="refused.*could run code"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(path, "cpu")
    assert not marker.exists()


def test_every_command_line_refuses(evil, tiny_data, tmp_path, capsys):
    path, marker = evil
    assert predict_main(["--ckpt", path, "--images", f"{tiny_data}/test", "--out", str(tmp_path / "o")]) == 2
    assert evaluate_main(["--ckpt", path, "--data", tiny_data]) == 2
    assert checkpoint_main(["show", path]) == 2
    assert checkpoint_main(["export", path, str(tmp_path / "exported.pt")]) == 2
    assert run(*parse_args(["--data", tiny_data, "--out", str(tmp_path / "run"), "--weights", path, *TINY_ARCH])) == 2
    err = capsys.readouterr().err
    assert err.count("refused") == 5, err
    assert "weights_only=False" not in err, "never suggest the unsafe way round"
    assert not marker.exists() and not (tmp_path / "exported.pt").exists()


def test_resume_refuses_a_tampered_last_pt(evil, tiny_data, tmp_path, capsys):
    path, marker = evil
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(path, out / "last.pt")
    assert run(tiny_config(tiny_data, str(out), resume=True), {"resume", "out"}, stream=None) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_weights_flag_refuses(evil, tmp_path):
    path, marker = evil
    for arch in ("digitnet_fpn", "fasterrcnn_resnet50_fpn_v2"):
        with pytest.raises(ModelError, match="refused.*could run code"):
            build_model(arch, {"min_size": 128}, weights=path)
    assert not marker.exists()
    with pytest.raises(ModelError, match="no such file"):
        build_model("digitnet_fpn", weights=str(tmp_path / "absent.pt"))


def test_weights_of_another_architecture_are_refused(tmp_path):
    shipped = os.path.join(ROOT, "checkpoints", "default.pt")  # digitnet_fpn
    with pytest.raises(ModelError, match="default.pt is a digitnet_fpn checkpoint, not a fasterrcnn_resnet50_fpn_v2 "
                                         "one: set the architecture to digitnet_fpn"):
        build_model("fasterrcnn_resnet50_fpn_v2", {"min_size": 128}, weights=shipped)
    bare = tmp_path / "bare.pt"  # the same weights without our header: measured, and refused as not fitting
    torch.save(load_checkpoint(shipped)["model"], bare)
    with pytest.raises(ModelError, match="only 0.0% of fasterrcnn_resnet50_fpn_v2's weights fit"):
        build_model("fasterrcnn_resnet50_fpn_v2", {"min_size": 128}, weights=str(bare))
    model, _, note = build_model("digitnet_fpn", weights=shipped)
    assert note.startswith(f"loaded weights from {shipped}") and "re-initialised" not in note
    reference = load_checkpoint(shipped)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())


def test_app_does_not_offer_it_and_keeps_serving(evil, tmp_path, monkeypatch, tiny_run):
    path, marker = evil
    runs = tmp_path / "runs"
    (runs / "evil").mkdir(parents=True)
    shutil.copy(path, runs / "evil" / "best.pt")
    (runs / "good").mkdir()
    shutil.copy(os.path.join(tiny_run, "best.pt"), runs / "good" / "best.pt")
    os.utime(runs / "evil" / "best.pt", (2e9, 2e9))  # newest: selected first
    monkeypatch.setenv("DIGIT_STUDIO_RUNS", str(runs))
    monkeypatch.setenv("DIGIT_STUDIO_CHECKPOINTS", str(tmp_path / "none"))
    at = AppTest.from_file(os.path.join(ROOT, "streamlit_app.py"), default_timeout=120)
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox[0].options == [str(runs / "good" / "best.pt")], "the picker reads headers with weights_only"
    assert at.selectbox[0].value == str(runs / "good" / "best.pt")
    assert not marker.exists()


def test_not_a_checkpoint_other_architecture_and_truncated(tmp_path, tiny_run):
    junk = tmp_path / "junk.pt"
    for seed in range(200):  # random bytes reach many different failures inside torch's unpickler
        junk.write_bytes(random.Random(seed).randbytes(5000))
        with pytest.raises(CheckpointError, match="junk.pt: (unreadable|not a PyTorch)"):
            load_checkpoint(str(junk))
    for cut in (0, 1, 20, 64):  # a file cut inside its header
        junk.write_bytes(open(os.path.join(tiny_run, "best.pt"), "rb").read()[:cut])
        with pytest.raises(CheckpointError, match="junk.pt: unreadable"):
            load_checkpoint(str(junk))
    plain = tmp_path / "state.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(CheckpointError, match="not a Digit Studio checkpoint"):
        load_checkpoint(str(plain))

    payload = load_checkpoint(os.path.join(tiny_run, "best.pt"))
    other, kwargs, _ = build_model("fasterrcnn_resnet50_fpn_v2", {"min_size": 128}, weights="none")
    mixed = dict(payload, model=other.state_dict())  # says digitnet_fpn, holds ResNet-50 weights
    save_checkpoint(str(tmp_path / "mixed.pt"), mixed)
    with pytest.raises(CheckpointError, match="do not fit architecture 'digitnet_fpn'"):
        load_model(str(tmp_path / "mixed.pt"), "cpu")

    data = open(os.path.join(tiny_run, "best.pt"), "rb").read()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: unreadable checkpoint, truncated"):
        load_checkpoint(str(tmp_path / "cut.pt"))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(str(tmp_path / "absent.pt"))
