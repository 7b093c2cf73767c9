import dataclasses
import json
import io
import math
import os
import re
import shutil
import sys

import numpy as np
import pytest
import torch

from conftest import tag_rotated, tiny_config
from core.checkpoint import load_checkpoint
from core.config import TrainConfig
from core.events import read_events
from core.runs import RunLock, run_status
from core import train as train_mod
from core.train import NonFiniteLossError, StopFlag, build_optimizer, build_scheduler, run


def _lr_sequence(optimizer, scheduler, epochs=10):
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _ours(scheduler):
    optimizer = build_optimizer(torch.nn.Linear(2, 2), TrainConfig(out="x", scheduler=scheduler))
    return _lr_sequence(optimizer, build_scheduler(optimizer, TrainConfig(out="x", scheduler=scheduler)))


def _torchs(make_scheduler):
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-4, weight_decay=5e-4)
    return _lr_sequence(optimizer, make_scheduler(optimizer))


def test_cosine_schedule_matches_torch_for_the_reference_settings():
    ours = _ours("cosine")
    expected = _torchs(lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=1e-6))
    assert ours == pytest.approx(expected, rel=1e-12)
    closed = [1e-6 + (1e-4 - 1e-6) * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(10)]
    assert ours == pytest.approx(closed, rel=1e-9)


def test_step_schedule_matches_torch_for_the_reference_settings():
    ours = _ours("step")
    expected = _torchs(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7))
    assert ours == pytest.approx(expected, rel=1e-12)
    assert ours == pytest.approx([1e-4 * 0.7**e for e in range(10)], rel=1e-9)


def test_run_folder_contents(tiny_run):
    for name in ("config.json", "log.jsonl", "history.json", "best.pt", "last.pt"):
        assert os.path.isfile(os.path.join(tiny_run, name)), name
    events = read_events(os.path.join(tiny_run, "log.jsonl"))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and "epoch" in kinds and "best" in kinds
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["step"] == progress[-1]["total"]
    epoch = next(e for e in events if e["event"] == "epoch")
    for key in ("epoch", "lr", "loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg",
                "mAP", "AP50", "AP75", "seconds"):
        assert key in epoch, key
    assert events[-1]["status"] == "completed"
    history = json.load(open(os.path.join(tiny_run, "history.json")))
    assert [h["epoch"] for h in history] == [1]
    assert json.load(open(os.path.join(tiny_run, "config.json")))["arch"] == "digitnet_fpn"


def test_checkpoints_are_self_describing_plain_data(tiny_run):
    for name in ("best.pt", "last.pt"):
        raw = torch.load(os.path.join(tiny_run, name), map_location="cpu", weights_only=True)
        for key in ("arch", "model_kwargs", "class_names", "config", "epoch", "metrics", "history", "model",
                    "commands", "data"):
            assert key in raw, (name, key)
        assert raw["class_names"] == [str(d) for d in range(10)]
        assert "mAP" in raw["metrics"]
    last = load_checkpoint(os.path.join(tiny_run, "last.pt"))
    assert {"optimizer", "scheduler"} <= set(last)
    assert "optimizer" not in load_checkpoint(os.path.join(tiny_run, "best.pt"))
    # The generated data's recipe travels with the model: its box convention and its mix of negatives.
    manifest = json.loads(open(os.path.join(last["config"]["data"], "synth.json")).read())
    recorded = last["data"]["synth"]
    assert recorded["boxes"] == manifest["boxes"] and recorded["negatives"] == manifest["negatives"]
    assert recorded["faint_strokes"] == manifest["faint_strokes"] == 0.0
    assert recorded["seed"] == manifest["seed"] and recorded["fonts"] == len(manifest["fonts"])


def test_half_precision_storage_restores_float32(tiny_run, tmp_path):
    from core.checkpoint import save_checkpoint

    payload = load_checkpoint(os.path.join(tiny_run, "best.pt"))
    path = str(tmp_path / "half.pt")
    save_checkpoint(path, payload, half=True)
    assert os.path.getsize(path) < os.path.getsize(os.path.join(tiny_run, "best.pt")) * 0.6
    again = load_checkpoint(path)
    for key, value in payload["model"].items():
        assert again["model"][key].dtype == value.dtype
        assert torch.allclose(again["model"][key], value, atol=1e-2, rtol=1e-3)


def _epochs(run_dir):
    return json.load(open(os.path.join(run_dir, "history.json")))


def test_resume_continues_at_the_next_epoch_with_identical_history(tiny_data, tmp_path):
    straight = str(tmp_path / "straight")
    assert run(tiny_config(tiny_data, straight, epochs=2, scheduler="step", subset_fraction=0.5), stream=None) == 0
    split = str(tmp_path / "split")
    assert run(tiny_config(tiny_data, split, epochs=1, scheduler="step", subset_fraction=0.5), stream=None) == 0
    assert run(tiny_config(tiny_data, split, epochs=2, resume=True), {"epochs", "resume", "out"}, stream=None) == 0
    events = read_events(os.path.join(split, "log.jsonl"))
    starts = [e for e in events if e["event"] == "start"]
    assert [s["start_epoch"] for s in starts] == [1, 2] and starts[1]["resumed"]
    a, b = _epochs(straight), _epochs(split)
    assert [h["epoch"] for h in b] == [1, 2]
    for x, y in zip(a, b):
        for key in ("lr", "loss", "loss_classifier", "mAP", "AP50"):
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-7), key
    assert load_checkpoint(os.path.join(split, "last.pt"))["epoch"] == 2


def test_refuses_to_overwrite_a_run_or_resume_nothing(tiny_run, tiny_data, tmp_path, capsys):
    assert run(tiny_config(tiny_data, tiny_run), stream=None) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert run(tiny_config(tiny_data, str(tmp_path / "fresh"), resume=True), stream=None) == 2
    assert "nothing to resume" in capsys.readouterr().err
    done = tmp_path / "done"
    shutil.copytree(tiny_run, done)
    assert run(tiny_config(tiny_data, str(done), resume=True), {"resume", "out"}, stream=None) == 2
    epochs = json.loads((done / "config.json").read_text())["epochs"]
    assert f"has finished all {epochs} epoch(s); --epochs N (more than {epochs}) trains it further" \
        in capsys.readouterr().err


def test_resume_rejects_changed_settings(tiny_data, tmp_path, capsys):
    out = str(tmp_path / "r")
    assert run(tiny_config(tiny_data, out), stream=None) == 0
    cfg = tiny_config(tiny_data, out, resume=True, lr=0.5, epochs=2)
    assert run(cfg, {"resume", "lr", "epochs", "out"}, stream=None) == 2
    assert "--lr 0.5 (saved 0.001)" in capsys.readouterr().err


def test_a_resume_refused_for_bad_data_leaves_a_finished_run_finished(tiny_data, tmp_path, capsys):
    out = str(tmp_path / "done")
    assert run(tiny_config(tiny_data, out), stream=None) == 0
    saved = {name: open(os.path.join(out, name), "rb").read()
             for name in ("last.pt", "best.pt", "history.json", "config.json")}
    bad = tmp_path / "bad"
    shutil.copytree(tiny_data, bad)
    coco = json.loads((bad / "train.json").read_text())
    coco["annotations"][0]["category_id"] = 11
    (bad / "train.json").write_text(json.dumps(coco))
    assert run(tiny_config(str(bad), out, resume=True, epochs=2), {"resume", "data", "epochs", "out"},
               stream=None) == 2
    err = capsys.readouterr().err
    assert "unknown category_id 11" in err and "is as it was" in err
    status = run_status(out)
    assert status["state"] == "completed" and "unknown category_id 11" in status["refused"]
    assert all(open(os.path.join(out, name), "rb").read() == data for name, data in saved.items())
    # A resume that then trains clears the refusal; a fresh run that bad data stops is still a failure.
    assert run(tiny_config(tiny_data, out, resume=True, epochs=2), {"resume", "epochs", "out"}, stream=None) == 0
    assert run_status(out)["refused"] == "" and run_status(out)["state"] == "completed"
    assert json.load(open(os.path.join(out, "config.json")))["epochs"] == 2, "a resume that trains records its flags"
    fresh = str(tmp_path / "fresh")
    os.mkdir(fresh)  # made before the run, as the app's launcher does: the run's record stays
    assert run(tiny_config(str(bad), fresh), stream=None) == 2
    assert run_status(fresh)["state"] == "failed" and run_status(fresh)["refused"] == ""


def test_busy_run_folder_is_refused(tiny_data, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    with RunLock(str(out)):
        assert run(tiny_config(tiny_data, str(out)), stream=None) == 2
    assert "in use by another training process" in capsys.readouterr().err
    assert not (out / "last.pt").exists()


def test_stop_request_ends_at_a_safe_point(tiny_data, tmp_path):
    out = str(tmp_path / "stop")
    stop = StopFlag()
    stop.requested = True
    assert run(tiny_config(tiny_data, out, epochs=3), stop=stop, stream=None) == 130
    end = read_events(os.path.join(out, "log.jsonl"))[-1]
    assert end["event"] == "end" and end["status"] == "stopped"
    assert not os.path.exists(os.path.join(out, "last.pt"))


def test_a_run_stopped_after_a_new_best_epoch_reports_that_epoch(tiny_data, tmp_path):
    out = str(tmp_path / "stopped")

    class StopOnceAnEpochIsSaved(StopFlag):  # as a Ctrl-C during epoch 2
        @property
        def requested(self):
            return os.path.exists(os.path.join(out, "best.pt"))

        @requested.setter
        def requested(self, value):
            pass

    assert run(tiny_config(tiny_data, out, epochs=3), stop=StopOnceAnEpochIsSaved(), stream=None) == 130
    best = load_checkpoint(os.path.join(out, "best.pt"))
    assert best["epoch"] == 1 and best["task2_reader_picked_on"]["split"] == "valid", "best.pt keeps a reader"
    report = json.loads(open(os.path.join(out, "report", "metrics.json")).read())
    assert report["mAP"] == pytest.approx(best["metrics"]["mAP"]), "the report is the best epoch's"


class _NanModel(torch.nn.Module):
    def __init__(self, transform):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.transform = transform  # the trainer sizes its batches by the detector's input transform

    def forward(self, images, targets=None):
        nan = self.w * float("nan")
        return {"loss_classifier": nan, "loss_box_reg": self.w, "loss_objectness": self.w, "loss_rpn_box_reg": self.w}


def test_non_finite_loss_stops_with_an_error_event(tiny_data, tmp_path, monkeypatch):
    real_build = train_mod.build_model

    def nan_build(arch, overrides, weights):
        model, kwargs, note = real_build(arch, overrides, weights)
        return _NanModel(model.transform), kwargs, note

    monkeypatch.setattr(train_mod, "build_model", nan_build)
    out = str(tmp_path / "nan")
    assert run(tiny_config(tiny_data, out), stream=None) == 1
    error = read_events(os.path.join(out, "log.jsonl"))[-1]
    assert error["event"] == "error" and "non-finite loss" in error["message"]
    assert not os.path.exists(os.path.join(out, "last.pt"))


def test_bad_dataset_stops_before_any_work(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    out = str(tmp_path / "run")
    os.mkdir(out)  # a folder the run did not make keeps its record of the refusal
    assert run(tiny_config(str(tmp_path / "data"), out), stream=None) == 2
    events = read_events(os.path.join(out, "log.jsonl"))
    assert events[-1]["event"] == "error" and "train" in events[-1]["message"]
    assert not any(e["event"] == "start" for e in events)


def test_data_without_valid_says_how_to_carve_one(tiny_data, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(tiny_data, data)
    shutil.rmtree(data / "valid")
    os.remove(data / "valid.json")
    assert run(tiny_config(str(data), str(tmp_path / "run")), stream=None) == 2
    assert "image folder valid/ not found: training scores every epoch on it" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        train_mod.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--data", "--out", "--arch", "--scheduler", "--epochs", "--lr", "--weight-decay",
                 "--subset-fraction", "--batch-size", "--device", "--seed", "--resume"):
        assert flag in text


def test_skip_invalid_trains_on_the_rest_and_says_how_many(tiny_data, tmp_path, capsys):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(tiny_data, data)
    coco = json.loads((data / "train.json").read_text())
    coco["annotations"][0]["bbox"] = [0, 0, -3, 4]
    coco["images"][5]["file_name"] = "gone.png"
    (data / "train.json").write_text(json.dumps(coco))
    tag_rotated(data / "train" / coco["images"][7]["file_name"])
    assert run(tiny_config(str(data), str(tmp_path / "strict")), stream=None) == 2
    err = capsys.readouterr().err
    assert "zero or negative size" in err and "image file missing" in err
    assert not (tmp_path / "strict").exists() and f"({tmp_path / 'strict'}, made for this run, is removed)" in err, \
        "a refused run leaves no folder behind"
    (tmp_path / "mine").mkdir()
    assert run(tiny_config(str(data), str(tmp_path / "mine")), stream=None) == 2
    assert (tmp_path / "mine").is_dir() and "is removed" not in capsys.readouterr().err, \
        "a folder it did not make stays"
    out = io.StringIO()
    assert run(tiny_config(str(data), str(tmp_path / "lenient"), skip_invalid=True), stream=out) == 0
    assert "dropped 2 training and 0 validation image(s)" in out.getvalue()
    assert "each epoch draws" not in out.getvalue(), "every image, every epoch: nothing to point out"
    assert f"1 warning(s) about the data, trained on as it is (python -m core.data {data} lists them all); first: " \
           f"train.json, image {coco['images'][7]['id']}: " in out.getvalue()
    start = next(e for e in read_events(str(tmp_path / "lenient" / "log.jsonl")) if e["event"] == "start")
    assert start["dropped"] == 2 and start["train_images"] == 14


def test_extending_a_finished_cosine_run_follows_the_longer_schedule(tiny_data, tmp_path):
    out = str(tmp_path / "extend")
    assert run(tiny_config(tiny_data, out, epochs=2, subset_fraction=0.25), stream=None) == 0
    said = io.StringIO()
    assert run(tiny_config(tiny_data, out, epochs=4, resume=True), {"epochs", "resume", "out"}, stream=said) == 0
    lrs = [h["lr"] for h in _epochs(out)]
    expected = [1e-6 + (1e-3 - 1e-6) * (1 + math.cos(math.pi * e / 4)) / 2 for e in (2, 3)]
    assert lrs[2:] == pytest.approx(expected, rel=1e-9)
    assert f"anneals over 4 epochs; lr for epoch 3 is {expected[0]:.3g}" in said.getvalue()
    assert "each epoch draws 4 of the 16 training images (--subset-fraction 0.25); --subset-fraction 1 trains on " \
           "all of them every epoch" in said.getvalue(), "a small dataset under a subset is pointed out"
    assert re.search(r"completed after \d+ s \(this session, from epoch 3\)", said.getvalue()), said.getvalue()


def test_validation_split_without_boxes_is_refused_before_training(tiny_data, tmp_path, capsys):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(tiny_data, data)
    coco = json.loads((data / "valid.json").read_text())
    coco["annotations"] = []
    (data / "valid.json").write_text(json.dumps(coco))
    assert run(tiny_config(str(data), str(tmp_path / "r")), stream=None) == 2
    assert "no digit boxes" in capsys.readouterr().err


def test_a_pretrained_reference_run_resumes_with_its_frozen_layers(tiny_data, tmp_path):
    from core.model import build_model

    donor, _, _ = build_model("fasterrcnn_resnet50_fpn_v2", {"min_size": 64}, weights="none")
    weights = tmp_path / "coco.pth"
    torch.save(donor.state_dict(), weights)
    out = str(tmp_path / "ref")
    reference = dict(arch="fasterrcnn_resnet50_fpn_v2", min_size=64, max_size=96, subset_fraction=0.25)
    assert run(tiny_config(tiny_data, out, weights=str(weights), **reference), stream=None) == 0
    assert load_checkpoint(f"{out}/last.pt")["model_kwargs"]["trainable_backbone_layers"] == 3
    assert run(tiny_config(tiny_data, out, resume=True, epochs=2), {"resume", "epochs"}, stream=None) == 0
    assert [h["epoch"] for h in json.loads(open(f"{out}/history.json").read())] == [1, 2]


def test_a_run_from_one_of_our_checkpoints_inherits_its_commands(tiny_data, tmp_path):
    """Fine-tuning keeps the whole recipe: the new checkpoint's commands start with the donor's,
    once, even when the donor is trained further before the fine-tuned run resumes."""
    donor_dir = str(tmp_path / "donor")
    assert run(tiny_config(tiny_data, donor_dir), stream=None) == 0
    donor = load_checkpoint(os.path.join(donor_dir, "best.pt"))["commands"]
    out = str(tmp_path / "tuned")
    assert run(tiny_config(tiny_data, out, weights=os.path.join(donor_dir, "best.pt")), stream=None) == 0
    commands = load_checkpoint(os.path.join(out, "best.pt"))["commands"]
    assert commands[:len(donor)] == donor and len(commands) == len(donor) + 1
    assert run(tiny_config(tiny_data, donor_dir, epochs=2, resume=True), {"epochs", "resume", "out"},
               stream=None) == 0
    assert run(tiny_config(tiny_data, out, epochs=2, resume=True), {"epochs", "resume", "out"}, stream=None) == 0
    resumed = load_checkpoint(os.path.join(out, "last.pt"))["commands"]
    assert resumed[:len(commands)] == commands and len(resumed) == len(commands) + 1, "listed once, then the resume"


def test_a_wider_model_trains_from_its_grown_checkpoint_and_only_at_its_width(tiny_run, tiny_data, tmp_path, capsys):
    from core.checkpoint import grow

    grown = str(tmp_path / "wide.pt")
    grow(os.path.join(tiny_run, "best.pt"), grown, 1.5)
    out = str(tmp_path / "wide")
    assert run(tiny_config(tiny_data, out, weights=grown, width=1.5), stream=None) == 0
    trained = load_checkpoint(os.path.join(out, "best.pt"))
    assert trained["model_kwargs"]["widths"] == [36, 48, 96, 192, 288]
    assert "re-initialised" not in trained["weights_note"], "every tensor of the grown model was loaded"
    assert trained["commands"][-2].startswith("python -m core.checkpoint grow"), "the recipe keeps the growing"
    assert run(tiny_config(tiny_data, str(tmp_path / "narrow"), weights=grown), stream=None) == 2
    assert "is a digitnet_fpn of width 1.5, but this run builds width 1: set the model width to 1.5 (--width 1.5)" \
        in capsys.readouterr().err
    assert not (tmp_path / "narrow").exists(), "refused before a run folder is made"
    assert run(tiny_config(tiny_data, str(tmp_path / "trained-wider"), weights=os.path.join(out, "best.pt"),
                           width=2.0), stream=None) == 2, "a run's best.pt records its width in its config"
    assert "is a digitnet_fpn of width 1.5" in capsys.readouterr().err
    assert run(tiny_config(tiny_data, str(tmp_path / "wider-at-once"), weights=os.path.join(tiny_run, "best.pt"),
                           width=1.5), stream=None) == 2
    assert f"or grow it to width 1.5 first: python -m core.checkpoint grow {tiny_run}/best.pt OUT.pt --width 1.5" \
        in capsys.readouterr().err


def test_a_fine_tune_of_a_model_that_reads_otherwise_says_how_to_read_as_it(tiny_run, tiny_data, tmp_path, capsys):
    from core.checkpoint import main as checkpoint_main

    parent = str(tmp_path / "parent.pt")  # reads at three sizes and shares line heights, as the shipped model does
    assert checkpoint_main(["export", os.path.join(tiny_run, "best.pt"), parent, "--views", "0.8,1,1.25",
                            "--line-heights", "shared"]) == 0
    out = str(tmp_path / "tuned")
    capsys.readouterr()
    assert run(tiny_config(tiny_data, out, weights=parent), stream=sys.stdout) == 0  # the stream capsys holds now
    said = capsys.readouterr().out
    assert f"--reading-of {parent}" in said, "the run says its best.pt reads with its own settings"
    assert f"python -m core.evaluate --ckpt {out}/read-as-weights.pt --data {tiny_data} --split valid --sweep-task2" \
        in said, "and that the copy's reader is picked again"
    read_as = os.path.join(out, "read-as-weights.pt")
    assert checkpoint_main(["export", os.path.join(out, "best.pt"), read_as, "--reading-of", parent,
                            "--views", "1,1.25"]) == 0
    options = load_checkpoint(read_as)["model_kwargs"]
    assert options["line_heights"] == "shared" and options["view_scales"] == [1.0, 1.25], "explicit flags come after"
    assert load_checkpoint(read_as)["task2_reader"] == load_checkpoint(os.path.join(out, "best.pt"))["task2_reader"]
    assert run(tiny_config(tiny_data, str(tmp_path / "again"), weights=os.path.join(tiny_run, "best.pt")),
               stream=sys.stdout) == 0
    assert "--reading-of" not in capsys.readouterr().out, "no hint when the weights read as the run does"


def test_weights_that_are_no_checkpoint_are_refused_before_a_run_folder_is_made(tmp_path, capsys):
    weights = tmp_path / "best.pt"
    torch.save({"hello": torch.zeros(1)}, weights)
    out = tmp_path / "tuned"
    assert run(tiny_config(str(tmp_path / "no-data"), str(out), weights=str(weights)), stream=None) == 2
    assert f"core.train: error: {weights} is not a checkpoint: no digitnet_fpn weights in it (a dict of 'hello')\n" \
        in capsys.readouterr().err
    assert not out.exists(), "refused before the run folder (and a failed run in the app's list)"


def test_the_stop_message_says_whether_an_epoch_was_saved(tmp_path):
    from core.train import StopFlag, _stop_message

    stop = StopFlag(requested=True, signal_name="SIGTERM")
    assert _stop_message(stop, str(tmp_path)) == "stopped on request (SIGTERM) before any epoch finished; nothing was saved"
    (tmp_path / "last.pt").write_bytes(b"")
    assert _stop_message(stop, str(tmp_path)) == "stopped on request (SIGTERM); last.pt holds the last finished epoch"


def test_letter_boxed_data_trains_a_letter_class_that_is_never_read_as_a_digit(tmp_path, tiny_run, fonts):
    from core import synth
    from core.evaluate import detect_split
    from core.data import load_split
    from core.images import decode_image
    from core.predict import load_model

    data = tmp_path / "letters"
    synth.generate_dataset(data, {"train": 12, "valid": 6}, seed=4, fonts=fonts, letter_boxes=True,
                           negatives=synth.Negatives(words_alone=0.4, letters_beside=0.8))
    out = str(tmp_path / "run")
    # From a digits-only checkpoint: its box predictor grows a letter class.
    assert run(tiny_config(str(data), out, weights=os.path.join(tiny_run, "best.pt")), stream=None) == 0
    saved = load_checkpoint(os.path.join(out, "best.pt"))
    assert saved["model_kwargs"]["num_classes"] == 12 and saved["class_names"][-1] == "letter"
    assert saved["data"]["synth"]["letter_boxes"] is True
    assert "re-initialised" not in saved["weights_note"]
    loaded = load_model(os.path.join(out, "best.pt"), device="cpu")
    loaded.model.roi_heads.score_thresh = 0.0  # every box the untrained head gives, letters included
    valid = load_split(str(data), "valid")
    images = [decode_image(r.path) for r in valid.records]
    with torch.inference_mode():
        raw = loaded.model.eval()([torch.from_numpy(np.array(im)).permute(2, 0, 1) / 255 for im in images])
    assert any((out["labels"] == 11).any() for out in raw), "the model itself finds letters"
    detections = detect_split(loaded.model, valid, torch.device("cpu"))
    assert all(0 <= digit <= 9 for d in detections for digit in d["digits"]), "a letter is never a digit"


def test_training_lays_the_model_out_channels_last_and_a_resumed_optimizer_follows():
    cfg = TrainConfig(out="x", arch="digitnet_fpn")
    model, _, _ = train_mod._build_model(cfg, None, torch.device("cpu"), letters=False)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)

    # Adam's moments as a checkpoint saved before the change holds them: contiguous.
    old_layout = torch.nn.Conv2d(3, 8, 3)
    saved = torch.optim.AdamW(old_layout.parameters())
    old_layout(torch.rand(1, 3, 8, 8)).sum().backward()
    saved.step()
    model = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters())
    optimizer.load_state_dict(saved.state_dict())
    moments = optimizer.state[model.weight]
    assert moments["exp_avg"].stride() != model.weight.stride(), "loading keeps the saved layout"
    expected = moments["exp_avg"].clone()
    train_mod._lay_out_like_params(optimizer)
    moments = optimizer.state[model.weight]
    assert moments["exp_avg"].stride() == moments["exp_avg_sq"].stride() == model.weight.stride()
    assert torch.equal(moments["exp_avg"], expected), "same values, new layout"


def test_the_command_line_warns_of_hours_of_cpu_training_as_the_train_page_does():
    reference = TrainConfig(data="d", out="o")  # the defaults: the reference recipe
    warning = train_mod._long_run_warning(reference, torch.device("cpu"), 30_000, 1)
    assert warning and "hours with fasterrcnn_resnet50_fpn_v2" in warning and "--arch digitnet_fpn" in warning
    assert train_mod._long_run_warning(reference, torch.device("cuda"), 30_000, 1) is None, "GPUs vary too much"
    assert "the 1 epoch(s) ahead" in train_mod._long_run_warning(reference, torch.device("cpu"), 30_000, 10)
    compact = TrainConfig(data="d", out="o", arch="digitnet_fpn", lr=1e-3)
    assert train_mod._long_run_warning(compact, torch.device("cpu"), 2_000, 1) is None, "minutes, not hours"
    assert "--subset-fraction" in train_mod._long_run_warning(
        dataclasses.replace(compact, epochs=100, subset_fraction=1.0), torch.device("cpu"), 30_000, 1)


def test_the_first_stop_signal_says_at_once_that_the_run_stops_after_its_step(capsys):
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        flag = StopFlag()
        flag.install()
        signal.raise_signal(signal.SIGINT)
        assert flag.requested and flag.signal_name == "SIGINT"
        assert "SIGINT: stopping after the current step" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_the_command_line_records_the_data_folder_whole(tiny_data, tmp_path, monkeypatch):
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.chdir(os.path.dirname(tiny_data))
    out = tmp_path / "cli"
    try:
        assert train_mod.main(["--data", os.path.basename(tiny_data), "--out", str(out), "--arch", "digitnet_fpn",
                               "--min-size", "64", "--max-size", "160", "--epochs", "1", "--subset-fraction", "1",
                               "--batch-size", "4", "--lr", "1e-3", "--device", "cpu"]) == 0
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert json.load(open(out / "config.json"))["data"] == tiny_data, "the app resumes it from another folder"


def test_the_compact_model_without_a_learning_rate_is_told_the_readmes(tmp_path, capsys):
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        missing = str(tmp_path / "no-data")
        assert train_mod.main(["--data", missing, "--out", str(tmp_path / "a"), "--arch", "digitnet_fpn"]) == 2
        assert "lr 0.0001 is the reference recipe's; digitnet_fpn trains from scratch with --lr 1e-3" in \
            capsys.readouterr().err
        assert train_mod.main(["--data", missing, "--out", str(tmp_path / "b"), "--arch", "digitnet_fpn",
                               "--lr", "1e-4"]) == 2
        assert "reference recipe's" not in capsys.readouterr().err, "a learning rate asked for is not questioned"
        weights = tmp_path / "parent.pt"
        weights.write_bytes(b"x")
        assert train_mod.main(["--data", missing, "--out", str(tmp_path / "c"), "--arch", "digitnet_fpn",
                               "--weights", str(weights), "--lr", "1e-3"]) == 2
        assert "core.train: note: learning rate 0.001 is one to train from scratch: on the weights of " \
               f"{weights}" in capsys.readouterr().err, "a fine-tune at a from-scratch rate is told, not refused"
        assert train_mod.main(["--data", missing, "--out", str(tmp_path / "d"), "--arch", "digitnet_fpn",
                               "--weights", str(weights)]) == 2
        assert "reference recipe's" not in capsys.readouterr().err, "a fine-tune is not told to raise its rate"
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
