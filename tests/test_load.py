"""Load: 8 browser sessions upload batches at once while a training run streams its log,
then 40 more uploads (``DIGIT_STUDIO_LOAD_UPLOADS``; docs/reliability.md quotes a run with 100, which takes
about nine minutes on a 2-core machine); every session gets the right numbers and the server's memory stays
bounded.

The figures (peak RSS before and after the uploads, resident memory at each quarter) are printed and saved to
artifacts/load.json.
"""

import json
import os
import time

from apphelpers import open_page, rss_kib, settle, start_app, stop_app
from conftest import ROOT, tiny_config
from core.launcher import start_run, stop_run, wait_until_started
from core.predict import load_model, predict_images, read_number
from core.runs import is_locked

SESSIONS = 8
UPLOADS = int(os.environ.get("DIGIT_STUDIO_LOAD_UPLOADS", "40"))
PARALLEL = 5  # uploads in flight at once during the memory part
SAMPLE_EVERY = max(PARALLEL, UPLOADS // 4 // PARALLEL * PARALLEL)  # resident memory read at each quarter
CLIMB_MIB_PER_UPLOAD = 3  # "still climbing": 150 MiB over the second half of 100 uploads, in proportion


def test_concurrent_sessions_while_training_and_memory_over_a_run_of_uploads(browser, tiny_data, tmp_path):
    default = os.path.join(ROOT, "checkpoints", "default.pt")
    runs = tmp_path / "runs"
    runs.mkdir()
    process, url = start_app(tmp_path, runs, os.path.join(ROOT, "checkpoints"))
    record = None
    try:
        # A training run streams its log on the Train page throughout.
        record = start_run(tiny_config(tiny_data, "x", epochs=500, subset_fraction=0.25), "streaming", str(runs))
        assert wait_until_started(record["run_dir"])
        watcher = open_page(browser, url + "/train")
        watcher.wait_for_selector("text=/epoch \\d+\\/500/", timeout=120_000)

        # Expected numbers straight from core, for three test images per session.
        loaded = load_model(default, "cpu")
        names = [f"{i}.png" for i in range(1, 9)]
        files = {n: open(os.path.join(tiny_data, "test", n), "rb").read() for n in names}
        expected = {n: read_number(d, loaded.reader)
                    for n, d in zip(names, predict_images(loaded, list(files.items())).detections)}

        contexts = [browser.new_context() for _ in range(SESSIONS)]
        pages = [open_page(context, url, viewport=(1200, 900)) for context in contexts]
        batches = [[names[(s + k) % len(names)] for k in range(3)] for s in range(SESSIONS)]
        for page, batch in zip(pages, batches):  # all eight uploads go out before any result is awaited
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                [os.path.join(tiny_data, "test", n) for n in batch])
        for page, batch in zip(pages, batches):
            page.wait_for_selector('[data-testid="stMetricValue"] >> nth=2', timeout=180_000)
            settle(page)
            shown = [v.inner_text().strip() for v in page.locator('[data-testid="stMetricValue"]').all()]
            want = [expected[n] if expected[n] != "-1" else "no digit (-1)" for n in batch]
            assert shown == want, (batch, shown, want)
        for context in contexts:
            context.close()
        assert process.poll() is None, "the server is still up"
        assert "/500" in watcher.locator('[data-testid="stCode"]').first.inner_text()
        watcher.close()
        # The training run has served its purpose; the memory figures are about uploads, and the
        # 100 of them take half as long without a trainer on the same two cores.
        stop_run(record["run_dir"], grace_s=20)
        assert _wait_unlocked(record["run_dir"])

        before = rss_kib(process.pid)
        samples = []
        context = browser.new_context()
        for first in range(0, UPLOADS, PARALLEL):  # a few sessions at a time, each a new page (session)
            wave = [open_page(context, url, viewport=(1000, 800)) for _ in range(min(PARALLEL, UPLOADS - first))]
            for offset, page in enumerate(wave):
                page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                    os.path.join(tiny_data, "test", names[(first + offset) % len(names)]))
            for page in wave:
                page.wait_for_selector('[data-testid="stMetricValue"]', timeout=120_000)
                page.close()
            if (first + len(wave)) % SAMPLE_EVERY == 0:
                samples.append(rss_kib(process.pid)["VmRSS"])
        context.close()
        after = rss_kib(process.pid)
        figures = {"uploads": UPLOADS, "sessions": SESSIONS, "rss_before_kib": before["VmRSS"],
                   "peak_before_kib": before["VmHWM"], "rss_after_kib": after["VmRSS"],
                   "peak_after_kib": after["VmHWM"], "sample_every_uploads": SAMPLE_EVERY,
                   "rss_samples_kib": samples}
        os.makedirs(os.path.join(ROOT, "artifacts"), exist_ok=True)
        with open(os.path.join(ROOT, "artifacts", "load.json"), "w") as handle:
            json.dump(figures, handle, indent=1)
        print("\nload figures:", json.dumps(figures))
        growth_mib = (after["VmHWM"] - before["VmHWM"]) / 1024
        assert growth_mib < 300, f"peak RSS grew by {growth_mib:.0f} MiB over {UPLOADS} uploads"
        if len(samples) >= 4:
            late = (samples[-1] - samples[len(samples) // 2 - 1]) / 1024
            late_uploads = SAMPLE_EVERY * (len(samples) - len(samples) // 2)
            assert late < CLIMB_MIB_PER_UPLOAD * late_uploads, \
                f"RSS still climbing: +{late:.0f} MiB over the last {late_uploads} uploads"
    finally:
        if record is not None and is_locked(record["run_dir"]):
            stop_run(record["run_dir"], grace_s=20)
            _wait_unlocked(record["run_dir"])
        stop_app(process)


def _wait_unlocked(run_dir: str, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while is_locked(run_dir) and time.time() < deadline:
        time.sleep(0.2)
    return not is_locked(run_dir)
