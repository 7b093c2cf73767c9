"""End to end in a real browser: `streamlit run` on a free port, Debian chromium driven by Playwright.

Screenshots of each page land in artifacts/screenshots/ (kept by CI as test artefacts).
Needs /usr/bin/chromium (scripts/test.sh installs it); set DIGIT_STUDIO_SKIP_BROWSER=1 to skip.
"""

import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image, ImageDraw, ImageFont

from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = os.path.join(ROOT, "artifacts", "screenshots")

pytestmark = pytest.mark.skipif(bool(os.environ.get("DIGIT_STUDIO_SKIP_BROWSER")),
                                reason="DIGIT_STUDIO_SKIP_BROWSER is set")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(tmp_path, runs_dir, checkpoints_dir):
    port = _free_port()
    env = dict(os.environ, DIGIT_STUDIO_RUNS=str(runs_dir), DIGIT_STUDIO_CHECKPOINTS=str(checkpoints_dir),
               PYTHONUNBUFFERED="1")
    log = open(tmp_path / f"streamlit-{port}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return process, url
        except OSError:
            time.sleep(0.3)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("streamlit did not start:\n" + open(tmp_path / f"streamlit-{port}.log").read()[-3000:])


def stop_app(process):
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "install Debian chromium (scripts/test.sh does) or set DIGIT_STUDIO_SKIP_BROWSER=1"
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_data):
    """The app with the repository's shipped checkpoints and an empty runs/ folder."""
    tmp = tmp_path_factory.mktemp("browser")
    runs = tmp / "runs"
    runs.mkdir()
    process, url = start_app(tmp, runs, os.path.join(ROOT, "checkpoints"))
    yield url, runs
    stop_app(process)


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector('[data-testid="stApp"]')
    return page


def _shot(page, name):
    os.makedirs(SHOTS, exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=os.path.join(SHOTS, name), full_page=True)


def _house_number_png(text="274"):
    image = Image.new("RGB", (150, 70), (235, 235, 225))
    ImageDraw.Draw(image).text((18, 8), text, font=ImageFont.load_default(size=48), fill=(20, 20, 30))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_upload_shows_boxes_and_the_number(browser, app, tmp_path):
    url, _ = app
    page = _open(browser, url)
    page.wait_for_selector("text=Detect house numbers")
    path = tmp_path / "7.png"
    path.write_bytes(_house_number_png("274"))
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    page.wait_for_selector('[data-testid="stMetricValue"]')
    assert page.locator('[data-testid="stMetricValue"]').first.inner_text().strip() == "274"
    figure = page.locator(".js-plotly-plot").first
    figure.wait_for()
    # One outline trace per digit box drawn on the picture.
    assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 3
    _shot(page, "detect.png")
    page.close()


def test_schedulers_page_shows_two_curves(browser, app):
    url, _ = app
    page = _open(browser, url + "/schedulers")
    page.wait_for_selector("text=Compare learning-rate schedulers")
    page.wait_for_selector(".js-plotly-plot")
    legend = page.locator(".js-plotly-plot .legend").first.text_content()
    assert "cosine" in legend and "step" in legend
    assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 2
    _shot(page, "schedulers.png")
    page.close()


def _settle(page):
    """Wait for Streamlit to finish a rerun: no script running, no stale elements left."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]')
                 && document.querySelectorAll('[data-stale="true"]').length === 0""")


def _fill(page, label, value):
    _settle(page)
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Tab")


def _choose(page, label, option):
    _settle(page)
    page.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text(label, exact=True)).click()
    page.get_by_role("option", name=re.compile(f"^{re.escape(option)}")).click()


def test_train_page_launches_a_run_and_streams_its_log(browser, app, tiny_data):
    url, runs = app
    page = _open(browser, url + "/train")
    page.wait_for_selector("text=Train a detector")
    _fill(page, "Data folder", tiny_data)
    page.wait_for_selector("text=New run")
    _fill(page, "Run name", "browser-run")
    _choose(page, "arch", "digitnet_fpn")
    _choose(page, "device", "cpu")
    for label, value in (("min size", 64), ("max size", 160), ("epochs", 2), ("subset fraction", 1.0),
                         ("lr", 0.001)):
        _fill(page, label, value)
    page.get_by_role("button", name="Launch training").click()
    page.wait_for_selector("text=Launched browser-run")
    # The live view tails the run's log while it trains, then shows it finished.
    page.wait_for_selector("text=/epoch 1\\/2/", timeout=120_000)
    page.wait_for_selector("text=/completed/", timeout=180_000)
    _shot(page, "train.png")
    log = page.locator('[data-testid="stCode"]').first.inner_text()
    assert "epoch 2/2" in log and "core.train: completed" in log, log
    assert (runs / "browser-run" / "best.pt").exists()
    page.close()
    # The finished run's best.pt is offered on the Detect page without restarting the app.
    page = _open(browser, url)
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    assert page.get_by_role("option", name=re.compile("browser-run")).count() == 1
    page.close()
