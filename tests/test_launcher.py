"""The app's launcher: argument lists, run names confined to runs/, busy folders, clean stops."""

import json
import os
import signal
import time

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT, tiny_config
from core.checkpoint import load_checkpoint
from core.launcher import LaunchError, remove_failed_run, run_dir_for, start_run, stop_run, wait_until_started
from core.runs import RunLock, is_locked, run_status


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "/etc", "a b", "x;rm -rf ~", "$(id)", "`id`",
                                  "", "-rf", "a\nb", "x" * 65, "名前"])
def test_unsafe_run_names_are_refused(tmp_path, name):
    with pytest.raises(LaunchError, match="not allowed"):
        run_dir_for(name, str(tmp_path))


def test_safe_names_stay_inside_runs(tmp_path):
    assert run_dir_for("digitnet-cosine_2.1", str(tmp_path)) == str(tmp_path / "digitnet-cosine_2.1")


def test_missing_data_folder_is_refused(tmp_path):
    cfg = tiny_config(str(tmp_path / "no-data"), "x")
    with pytest.raises(LaunchError, match="no folder at .*: check the path"):
        start_run(cfg, "r", str(tmp_path / "runs"))
    assert not (tmp_path / "runs" / "r").exists()


def test_only_a_run_that_saved_nothing_and_is_not_held_can_be_deleted(tmp_path):
    runs = tmp_path / "runs"
    for name in ("typo", "held", "trained"):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text("{}")
    (runs / "trained" / "history.json").write_text("[]")
    with RunLock(str(runs / "held")):
        with pytest.raises(LaunchError, match="still training"):
            remove_failed_run("held", str(runs))
    with pytest.raises(LaunchError, match="holds history.json"):
        remove_failed_run("trained", str(runs))
    with pytest.raises(LaunchError, match="not allowed"):
        remove_failed_run("..", str(runs))
    (runs / "starting").mkdir()
    (runs / "starting" / "launch.json").write_text(json.dumps({"pid": os.getpid()}))  # launched, lock not yet taken
    with pytest.raises(LaunchError, match="still training"):
        remove_failed_run("starting", str(runs))
    remove_failed_run("typo", str(runs))
    assert sorted(os.listdir(runs)) == ["held", "starting", "trained"]


def _wait(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _zombie_children():
    zombies = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(pid))
    return zombies


def test_launch_refuse_busy_then_stop_the_whole_group(tiny_data, tmp_path):
    runs = str(tmp_path / "runs")
    cfg = tiny_config(tiny_data, "x", epochs=200)
    record = start_run(cfg, "long", runs)
    run_dir = record["run_dir"]
    assert record["argv"][:3] == [record["argv"][0], "-m", "core.train"] and "--out" in record["argv"]
    assert wait_until_started(run_dir)
    assert _wait(lambda: run_status(run_dir)["progress"] is not None)
    with pytest.raises(LaunchError, match="still training"):
        start_run(cfg, "long", runs)
    assert os.getpgid(record["pid"]) == record["pid"] != os.getpgid(0), "own process group"
    assert stop_run(run_dir)
    assert _wait(lambda: not is_locked(run_dir), 60)
    assert _wait(lambda: run_status(run_dir)["state"] == "stopped", 10), run_status(run_dir)
    assert _wait(lambda: not _group_alive(record["pgid"]), 30), "every process of the run has ended"
    if os.path.exists(os.path.join(run_dir, "last.pt")):
        load_checkpoint(os.path.join(run_dir, "last.pt"))
    assert _wait(lambda: not _zombie_children(), 10), "the app reaps its children"


def test_a_killed_run_shows_as_died_not_running(tiny_data, tmp_path):
    record = start_run(tiny_config(tiny_data, "x", epochs=200), "doomed", str(tmp_path / "runs"))
    run_dir = record["run_dir"]
    assert _wait(lambda: run_status(run_dir)["progress"] is not None)
    os.killpg(record["pgid"], signal.SIGKILL)
    assert _wait(lambda: run_status(run_dir)["state"] == "died", 30)
    assert "without a final event" in run_status(run_dir)["message"]
    assert _wait(lambda: not _zombie_children(), 10)


def test_a_crashed_run_shows_its_error(tmp_path, tiny_data):
    broken = tmp_path / "broken-data"
    (broken / "train").mkdir(parents=True)
    (broken / "train.json").write_text('{"images": [], ')
    record = start_run(tiny_config(str(broken), "x"), "bad", str(tmp_path / "runs"))
    assert _wait(lambda: run_status(record["run_dir"])["state"] == "failed")
    assert "malformed JSON" in run_status(record["run_dir"])["message"]
    # Launched again under its name (it saved no epoch): the new attempt's log starts clean.
    logs = [os.path.join(record["run_dir"], name) for name in ("stdout.log", "stderr.log")]
    assert any("malformed JSON" in open(path).read() for path in logs)
    again = start_run(tiny_config(tiny_data, "x", epochs=1), "bad", str(tmp_path / "runs"))
    assert _wait(lambda: run_status(again["run_dir"])["state"] == "completed")
    assert not any("malformed JSON" in open(path).read() for path in logs)
    assert "epoch 1/1" in open(logs[0]).read()


def test_train_form_rejects_out_of_range_values(tmp_path, monkeypatch, tiny_data):
    monkeypatch.setenv("DIGIT_STUDIO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DIGIT_STUDIO_CHECKPOINTS", str(tmp_path / "ckpt"))
    at = AppTest.from_file(os.path.join(ROOT, "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    by_label = {w.label: w for w in list(at.text_input) + list(at.number_input)}
    by_label["Data folder"].set_value(tiny_data)
    at.run()
    by_label = {w.label: w for w in list(at.text_input) + list(at.number_input)}
    # The config's ranges bound the fields, and +/- steps suit small values (Streamlit's 0.01 would step a
    # learning rate of 0.001 to -0.009).
    assert (by_label["Learning rate"].min, by_label["Learning rate"].step) == (0.0, pytest.approx(1e-4))
    assert by_label["Epochs"].min == 1 and by_label["Batch size"].min == 1
    assert by_label["Share of training set per epoch"].max == 1.0
    assert by_label["Final learning rate (eta_min)"].step == pytest.approx(1e-7)
    valid = {"Learning rate": 1e-3, "Share of training set per epoch": 1.0, "Final learning rate (eta_min)": 1e-6}
    # Values inside the fields' bounds that the config still refuses: open bounds, and fields checked together.
    cases = [("Learning rate", 0.0, "lr=0.0 must be > 0", "(check: Learning rate)"),
             ("Share of training set per epoch", 0.0, "subset_fraction=0.0 must be > 0.0",
              "(check: Share of training set per epoch)"),
             ("Final learning rate (eta_min)", 0.01, "must not exceed lr=0.001",
              "(check: Final learning rate (eta_min))")]
    for label, value, message, named in cases:
        widgets = {w.label: w for w in list(at.text_input) + list(at.number_input)}
        run_name = f"case-{label.split()[0]}"
        widgets["Run name"].set_value(run_name)
        for name, good in valid.items():  # one bad value at a time
            widgets[name].set_value(value if name == label else good)
        next(b for b in at.button if b.label == "Launch training").click()
        at.run()
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and message in errors[0] and named in errors[0], (label, errors)
        assert not os.path.exists(tmp_path / "runs" / run_name)
    widgets = {w.label: w for w in list(at.text_input)}
    widgets["Data folder"].set_value(str(tmp_path / "nowhere"))
    at.run()
    widgets = {w.label: w for w in list(at.text_input) + list(at.number_input)}
    widgets["Run name"].set_value("no-data")
    for name, good in valid.items():
        widgets[name].set_value(good)
    next(b for b in at.button if b.label == "Launch training").click()
    at.run()
    assert any("no folder at" in e.value and "check the path" in e.value for e in at.error)
    assert not os.path.exists(tmp_path / "runs" / "no-data")


def test_shell_characters_in_the_data_path_are_just_characters(tiny_data, tmp_path):
    """The child gets an argument list: a data folder named like a shell command is only a name."""
    import shutil

    marker = tmp_path / "pwned"
    data = tmp_path / f"data $(touch {marker}); `touch {marker}` & echo"
    shutil.copytree(tiny_data, data)
    record = start_run(tiny_config(str(data), "x"), "shelly", str(tmp_path / "runs"))
    assert _wait(lambda: run_status(record["run_dir"])["state"] not in ("new", "running"))
    assert run_status(record["run_dir"])["state"] == "completed", open(f"{record['run_dir']}/stderr.log").read()[-2000:]
    assert not marker.exists()
    assert load_checkpoint(os.path.join(record["run_dir"], "last.pt"))["config"]["data"] == str(data)


def test_a_command_line_run_resumed_from_the_app_keeps_its_earlier_lines(tiny_data, tmp_path):
    from core.train import run

    runs = tmp_path / "runs"
    run_dir = str(runs / "cli")
    assert run(tiny_config(tiny_data, run_dir), stream=None) == 0  # as from a terminal: no stdout.log
    assert not os.path.exists(os.path.join(run_dir, "stdout.log"))
    record = start_run(tiny_config(tiny_data, run_dir, epochs=2, resume=True), "cli", str(runs))
    assert _wait(lambda: run_status(record["run_dir"])["epochs_done"] == 2 and not is_locked(run_dir))
    lines = open(os.path.join(run_dir, "stdout.log")).read().splitlines()
    assert lines[0] == "(started from the command line; from its log.jsonl:)"
    assert "start: digitnet_fpn on cpu, epochs 1-1" in lines[1] and "epoch 1: loss" in lines[2]
    assert any(line.startswith("core.train: resuming") for line in lines[3:]), "then the resumed run's own output"
