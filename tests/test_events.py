from core.events import events_as_lines, latest_progress


def _progress(epoch, step, loss=1.0):
    return {"event": "progress", "epoch": epoch, "step": step, "total": 4, "loss": loss}


def test_latest_progress_keeps_only_the_last_attempt_at_a_redone_epoch():
    events = [{"event": "start", "start_epoch": 1}, _progress(1, 2), _progress(1, 4), {"event": "epoch", "epoch": 1},
              _progress(2, 2, loss=9.0),  # stopped during epoch 2...
              {"event": "start", "start_epoch": 2}, _progress(2, 2), _progress(2, 4)]  # ...which the resume redoes
    kept = latest_progress(events)
    assert [(e["epoch"], e["step"]) for e in kept] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert 9.0 not in [e["loss"] for e in kept]


def test_latest_progress_after_a_relaunch_from_scratch_and_without_losses():
    events = [{"event": "start", "start_epoch": 1}, _progress(1, 2, loss=5.0),
              {"event": "start", "start_epoch": 1}, _progress(1, 1), {"event": "progress", "epoch": 1, "step": 2}]
    assert [(e["step"], e["loss"]) for e in latest_progress(events)] == [(1, 1.0)]


def test_a_command_line_runs_log_reads_back_as_lines_for_people():
    events = [{"event": "start", "time": 0, "arch": "digitnet_fpn", "device": "cpu", "start_epoch": 1, "epochs": 2},
              {"event": "progress", "time": 1, "epoch": 1, "step": 3, "total": 9, "loss": 1.0},
              {"event": "epoch", "time": 2, "epoch": 1, "loss": 0.91234, "mAP": 0.1, "task2_accuracy": 0.25},
              {"event": "end", "time": 3, "status": "stopped", "message": "stopped on request"},
              {"event": "refused", "time": 4, "message": "train.json, image 3: image file missing"}]
    header, *lines = events_as_lines(events)
    assert header == "(started from the command line; from its log.jsonl:)"
    lines = [line.split(" ", 1)[1] for line in lines]
    assert lines == ["start: digitnet_fpn on cpu, epochs 1-2", "epoch 1: loss 0.9123, mAP 0.1000, task2 0.2500",
                     "end: stopped: stopped on request", "refused: train.json, image 3: image file missing"]
