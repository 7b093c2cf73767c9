"""Starting the real app (`streamlit run`) and a headless chromium for end-to-end tests."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(tmp_path, runs_dir, checkpoints_dir, data_dir=None):
    port = _free_port()
    env = dict(os.environ, DIGIT_STUDIO_RUNS=str(runs_dir), DIGIT_STUDIO_CHECKPOINTS=str(checkpoints_dir),
               PYTHONUNBUFFERED="1")
    if data_dir is not None:
        env["DIGIT_STUDIO_DATA"] = str(data_dir)
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
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def rss_kib(pid: int) -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def settle(page) -> None:
    """Wait for Streamlit to finish a rerun: no script running, no stale elements left."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]')
                 && document.querySelectorAll('[data-stale="true"]').length === 0""")


def open_page(browser_or_context, url: str, viewport=(1400, 1000)):
    page = browser_or_context.new_page()  # a Browser's page gets its own context; a context's shares it
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector('[data-testid="stApp"]')
    return page
