"""Reading a run folder: its state from the lock and the events, its history, the checkpoints offered."""

import json
import os
import time

import pytest

from core.runs import RunBusyError, RunLock, list_checkpoints, read_history, run_dirs, run_status


def _log(run_dir, *events):
    run_dir.mkdir(exist_ok=True)
    with open(run_dir / "log.jsonl", "a") as handle:
        for event in events:
            handle.write(json.dumps({"time": 1.0, **event}) + "\n")


START = {"event": "start", "epochs": 3}
EPOCH = {"event": "epoch", "epoch": 1, "loss": 0.5, "mAP": 0.2}


@pytest.mark.parametrize("events, state, message", [
    ((), "new", ""),
    ((START, EPOCH), "died", "the training process ended without a final event (killed or crashed)"),
    ((START, EPOCH, {"event": "end", "status": "completed"}), "completed", ""),
    ((START, {"event": "end", "status": "stopped", "message": "stopped on request"}), "stopped", "stopped on request"),
    ((START, {"event": "error", "message": "non-finite loss"}), "failed", "non-finite loss"),
])
def test_the_state_comes_from_the_last_start_end_or_error(tmp_path, events, state, message):
    _log(tmp_path / "run", *events)
    status = run_status(str(tmp_path / "run"))
    assert (status["state"], status["message"], status["refused"]) == (state, message, "")


def test_a_refused_resume_leaves_the_state_and_is_reported_until_the_run_starts_again(tmp_path):
    run = tmp_path / "run"
    _log(run, START, EPOCH, {"event": "end", "status": "completed"},
         {"event": "refused", "message": "train.json, image 3: image file missing"})
    status = run_status(str(run))
    assert status["state"] == "completed" and status["refused"] == "train.json, image 3: image file missing"
    assert status["epochs_done"] == 1 and status["epochs"] == 3
    _log(run, {**START, "epochs": 4}, {**EPOCH, "epoch": 2})
    status = run_status(str(run))
    assert status["state"] == "died" and status["refused"] == "", "the refusal is over once the run started again"


def test_a_resumed_run_shows_no_progress_until_its_own_first_step(tmp_path):
    run = tmp_path / "run"
    step = {"event": "progress", "epoch": 1, "step": 40, "total": 50}
    _log(run, START, step, {"event": "end", "status": "stopped", "message": "stopped on request"})
    assert run_status(str(run))["progress"] == {"time": 1.0, **step}, "a stopped run shows where it stopped"
    _log(run, START)
    assert run_status(str(run))["progress"] is None, "not epoch 1's step 40 of the attempt before"
    _log(run, {**step, "epoch": 2, "step": 1})
    assert run_status(str(run))["progress"]["epoch"] == 2


def test_a_held_lock_means_running_and_a_second_holder_is_refused(tmp_path):
    run = tmp_path / "run"
    _log(run, START)
    with RunLock(str(run)):
        assert run_status(str(run))["state"] == "running"
        with pytest.raises(RunBusyError, match=f"pid {os.getpid()}"):
            RunLock(str(run)).acquire()
    assert run_status(str(run))["state"] == "died", "released without an end event"


def test_a_launch_that_wrote_only_stderr_shows_its_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "stderr.log").write_text("some warning\ncore.train: error: --data nowhere: dataset folder not found\n")
    status = run_status(str(run))
    assert status["state"] == "failed" and "dataset folder not found" in status["message"]


def test_history_is_history_json_or_else_the_logs_epochs(tmp_path):
    run = tmp_path / "run"
    _log(run, START, EPOCH, {**EPOCH, "epoch": 2, "mAP": 0.3}, {**EPOCH, "epoch": 2, "mAP": 0.35})
    assert [(h["epoch"], h["mAP"]) for h in read_history(str(run))] == [(1, 0.2), (2, 0.35)], "a redone epoch once"
    (run / "history.json").write_text(json.dumps([{"epoch": 1, "mAP": 0.9}]))
    assert read_history(str(run)) == [{"epoch": 1, "mAP": 0.9}]
    (run / "history.json").write_text(json.dumps({"epoch": 1}))
    with pytest.raises(ValueError, match="expected a list of epoch records"):
        read_history(str(run))


def test_checkpoints_offered_are_the_shipped_default_then_every_other_newest_first(tmp_path, monkeypatch):
    checkpoints, runs = tmp_path / "checkpoints", tmp_path / "runs"
    monkeypatch.setenv("DIGIT_STUDIO_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("DIGIT_STUDIO_RUNS", str(runs))
    assert list_checkpoints() == []

    def write(path, age):
        path.write_bytes(b"x")
        os.utime(path, (time.time() + age, time.time() + age))

    for index, name in enumerate(("old", "new", "nothing-saved")):
        (runs / name).mkdir(parents=True)
        if name != "nothing-saved":
            write(runs / name / "best.pt", index)
            write(runs / name / "last.pt", 10 + index)  # the newest of all: a resume file, never offered
    checkpoints.mkdir()
    write(checkpoints / "default.pt", 20)  # first however new the others are
    assert list_checkpoints() == [str(checkpoints / "default.pt"), str(runs / "new" / "best.pt"),
                                  str(runs / "old" / "best.pt")]
    write(runs / "wide-start.pt", 5)  # what core.checkpoint grow (or export) writes straight into runs/
    (runs / "notes.txt").write_text("x")
    # core.train's end-of-run hint exports read-as-weights.pt into the run's folder: offered, by its own time.
    write(runs / "old" / "read-as-weights.pt", 3)
    (runs / "old" / "report").mkdir()
    (runs / "old" / "report" / "notes.txt").write_text("x")
    assert list_checkpoints() == [str(checkpoints / "default.pt"), str(runs / "wide-start.pt"),
                                  str(runs / "old" / "read-as-weights.pt"), str(runs / "new" / "best.pt"),
                                  str(runs / "old" / "best.pt")]
    # An export beside the default (core.checkpoint export's help suggests checkpoints/) is offered by its age too.
    write(checkpoints / "mine.pt", 2.5)
    (checkpoints / "notes.txt").write_text("x")
    assert list_checkpoints()[2:4] == [str(runs / "old" / "read-as-weights.pt"), str(checkpoints / "mine.pt")]


def test_a_folder_is_a_run_only_when_training_or_a_launch_wrote_into_it(tmp_path, monkeypatch):
    checkpoints, runs = tmp_path / "checkpoints", tmp_path / "runs"
    monkeypatch.setenv("DIGIT_STUDIO_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("DIGIT_STUDIO_RUNS", str(runs))
    for name, files in {"copied": ["best.pt"], "cli": ["config.json"], "logged": ["log.jsonl"],
                        "curves": ["history.json"], "launched": ["launch.json", "stderr.log"],
                        "notes": ["stderr.log", "notes.txt"]}.items():
        (runs / name).mkdir(parents=True)
        for file in files:
            (runs / name / file).write_text("x")
    (runs / "loose.pt").write_text("x")
    assert run_dirs() == [("runs", str(runs / name)) for name in ("cli", "curves", "launched", "logged")], \
        "a folder holding only a copied checkpoint (or stray files) is no run"
