import os
import time

from core import background
from core.report import REPORT_FILES


def test_a_job_evaluates_in_the_background_and_writes_its_report(tiny_run, tiny_data):
    key = background.job_key(os.path.join(tiny_run, "best.pt"), tiny_data, "valid")
    job = background.EvaluationJob(key).start().wait(120)
    assert job.state == "done", job.message
    assert job.done == job.total == 8
    assert sorted(os.listdir(job.result.folder)) == sorted(REPORT_FILES)
    assert len(job.result.detections) == 8 and job.result.report.metrics["split"] == "valid"
    job.discard()  # what the Evaluate page does to a result it no longer keeps
    assert not os.path.exists(job.result.folder)


def test_a_job_can_be_cancelled_while_it_detects(tiny_run, tiny_data, monkeypatch):
    def slow_detect(model, split, device, progress=None, should_stop=None, input_size=None):
        for step in range(200):
            if should_stop():
                raise InterruptedError("evaluation stopped")
            progress(step, 200)
            time.sleep(0.05)
        raise AssertionError("never cancelled")

    monkeypatch.setattr(background, "detect_split", slow_detect)
    job = background.EvaluationJob(background.job_key(os.path.join(tiny_run, "best.pt"), tiny_data, "valid")).start()
    deadline = time.time() + 60
    while job.done < 3 and time.time() < deadline:
        time.sleep(0.05)
    job.cancel()
    job.wait(30)
    assert job.state == "cancelled" and job.result is None


def test_a_changed_annotation_file_is_another_evaluation(tiny_run, tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    checkpoint = os.path.join(tiny_run, "best.pt")
    before = background.job_key(checkpoint, str(data), "valid")
    os.utime(data / "valid.json", (before.annotations_mtime + 10, before.annotations_mtime + 10))
    assert background.job_key(checkpoint, str(data), "valid") != before
    assert background.job_key(checkpoint, str(data), "valid", 320) != background.job_key(checkpoint, str(data), "valid")


def test_a_split_with_a_broken_image_fails_as_skippable_and_skip_invalid_scores_the_rest(tiny_run, tiny_data,
                                                                                        tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "valid" / sorted(os.listdir(data / "valid"))[0]).write_text("not a picture")
    checkpoint = os.path.join(tiny_run, "best.pt")
    refused = background.EvaluationJob(background.job_key(checkpoint, str(data), "valid")).start().wait(120)
    assert refused.state == "failed" and refused.skippable and "problem(s)" in refused.message
    job = background.EvaluationJob(background.job_key(checkpoint, str(data), "valid", skip_invalid=True)).start()
    job.wait(120)
    assert job.state == "done", job.message
    metrics = job.result.report.metrics
    assert metrics["images"] == 7 and metrics["skipped_images"] == 1 and len(metrics["skipped"]) == 1
    assert job.key != refused.key, "skipping is another evaluation"
