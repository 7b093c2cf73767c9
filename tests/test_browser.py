"""End to end in a real browser: `streamlit run` on a free port, Debian chromium driven by Playwright.

Screenshots of each page land in artifacts/screenshots/ (kept by CI as test artefacts).
Needs /usr/bin/chromium (scripts/test.sh installs it); set DIGIT_STUDIO_SKIP_BROWSER=1 to skip.
"""

import csv
import io
import json
import os
import re
import shutil
import time
import zipfile

import pytest
from playwright.sync_api import expect
from PIL import Image, ImageDraw, ImageFont

from apphelpers import open_page, settle, start_app, stop_app
from conftest import ROOT
from core.checkpoint import load_checkpoint
from core.data import load_split
from core.runs import is_locked

SHOTS = os.path.join(ROOT, "artifacts", "screenshots")


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_data):
    """The app with the repository's shipped checkpoints, an empty runs/ folder and the tiny dataset under data/."""
    tmp = tmp_path_factory.mktemp("browser")
    runs = tmp / "runs"
    runs.mkdir()
    # Every digit labelled one higher than it is: whatever the model reads, the Evaluate page has failures to show.
    mislabelled = tmp / "data" / "mislabelled"
    shutil.copytree(tiny_data, mislabelled)
    coco = json.loads((mislabelled / "valid.json").read_text())
    for annotation in coco["annotations"]:
        annotation["category_id"] = annotation["category_id"] % 10 + 1
    (mislabelled / "valid.json").write_text(json.dumps(coco))
    os.utime(mislabelled, (1, 1))  # the oldest: the pages open the tiny set first
    shutil.copytree(tiny_data, tmp / "data" / "tiny")
    process, url = start_app(tmp, runs, os.path.join(ROOT, "checkpoints"), tmp / "data")
    yield url, runs
    stop_app(process)


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
    page = open_page(browser, url)
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
    labels = page.locator(".js-plotly-plot .annotation-text").evaluate_all("els => els.map(e => e.textContent)")
    assert labels and all(re.fullmatch(r"\d \d\.\d\d", t) for t in labels), f"large digits show their score: {labels}"
    # Only the digits of the number read are labelled; other boxes are dotted, with their label on hover.
    assert sorted(t.split()[0] for t in labels) == sorted("274"), labels
    _shot(page, "detect.png")
    page.close()


def test_an_iphone_heic_photo_uploads_and_is_read_upright(browser, app, tmp_path):
    """The uploader takes .heic (what an iPhone saves); the page turns it upright as its EXIF says."""
    url, _ = app
    image = Image.open(io.BytesIO(_house_number_png("274")))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    path = tmp_path / "IMG_0274.HEIC"
    image.rotate(90, expand=True).save(path, "HEIF", quality=90, exif=exif.tobytes())
    page = open_page(browser, url)
    page.wait_for_selector("text=Detect house numbers")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    page.wait_for_selector('[data-testid="stMetricValue"]')
    expect(page.get_by_test_id("stMetricValue").first).to_have_text("274")
    page.get_by_text("How this checkpoint reads an image").click()
    page.wait_for_selector("text=/each image near its own size/")
    _shot(page, "detect-heic.png")
    page.close()


def test_a_photo_shows_the_number_region_it_was_read_in(browser, app, tmp_path):
    """A street photo with a small plate (28 px digits in a 551x980 photo, 11-13 px wide on screen): the page
    reads it and draws the region the number was read in."""
    from core import synth

    url, _ = app
    # Pillow's own font only, so the scene is the same on every machine (it depends on the fonts installed).
    rng, np_rng = synth.sample_rngs(31, "browser-photo", 17)
    photo, boxes = synth.render_photo_scene(rng, [synth.BUILTIN_FONT], np_rng)
    assert photo.size == (551, 980) and "".join(str(b[4]) for b in sorted(boxes)) == "3695"
    path = tmp_path / "photo.jpg"
    photo.convert("RGB").save(path, quality=90)
    page = open_page(browser, url)
    page.wait_for_selector("text=Detect house numbers")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    page.wait_for_selector('[data-testid="stMetricValue"]')
    expect(page.get_by_test_id("stMetricValue").first).to_have_text("3695")
    page.wait_for_selector("text=The number's region (dashed yellow)")
    page.locator(".js-plotly-plot").first.wait_for()
    labels = page.locator(".js-plotly-plot").first.locator(".annotation-text").evaluate_all(
        "els => els.map(e => e.textContent)")
    # The plate's digits are about 12 px wide on screen: one label per digit would pile up on the plate.
    assert labels == ["3695"], f"a number too small on screen gets one label, the number: {labels}"
    _shot(page, "detect-photo.png")
    page.close()


def test_schedulers_page_shows_two_curves(browser, app):
    url, _ = app
    page = open_page(browser, url + "/schedulers")
    page.wait_for_selector("text=Compare learning-rate schedulers")
    page.wait_for_selector(".js-plotly-plot")
    legend = page.locator(".js-plotly-plot .legend").first.text_content()
    assert "cosine" in legend and "step" in legend
    assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 2
    _shot(page, "schedulers.png")
    # The learning rate opens on a log axis: one label per 1, 2 and 5 of each decade, never the 3-9 between
    # them (plotly's own labels every minor tick there, and they overlap).
    _pick(page, "Metric", "lr: learning rate")
    page.wait_for_selector("text=learning rate")
    labels = [t.strip() for t in page.locator(".js-plotly-plot .yaxislayer-above .ytick text").all_text_contents()]
    assert labels and all(label.replace("\u2212", "-")[0] in "125" for label in labels), labels
    _shot(page, "schedulers-lr.png")
    page.close()


def test_data_page_shows_counts_charts_and_a_filtered_grid(browser, app, tiny_data):
    url, _ = app
    page = open_page(browser, url + "/data")
    page.wait_for_selector("text=Browse a dataset")
    page.wait_for_selector("text=16 images")  # train's count
    expect(page.locator(".js-plotly-plot")).to_have_count(4)
    grid = page.locator('[data-testid="stImage"]').filter(has=page.locator('[data-testid="stImageCaption"]'))
    expect(grid).to_have_count(16)  # the close-up, folded below the grid, has no caption
    settle(page)
    # Typed, not clicked: once the grid's pictures have loaded, a click focuses the box without opening its list.
    page.get_by_role("combobox", name="Holding digit", exact=True).click()
    page.keyboard.type("7")
    page.keyboard.press("Enter")
    with_seven = sum("7" in r.number for r in load_split(tiny_data, "train").records)
    page.wait_for_selector(f"text={with_seven} image(s), page 1 of 1")
    expect(grid).to_have_count(with_seven)
    captions = page.locator('[data-testid="stImage"] [data-testid="stImageCaption"]').all_inner_texts()
    assert captions and all("7" in c.split("·")[1] for c in captions), captions
    page.set_viewport_size({"width": 1400, "height": 1700})  # Streamlit scrolls inside the page: show all of it
    _shot(page, "data.png")
    page.close()


def _pick(page, label, text):
    """Type into a selectbox and take the first match (a click on it does not always open its list)."""
    settle(page)
    page.get_by_role("combobox", name=label, exact=True).click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")
    settle(page)


def test_evaluate_page_shows_the_report_filters_failures_and_downloads_it(browser, app):
    url, runs = app
    page = open_page(browser, url + "/evaluate", viewport=(1400, 1400))
    page.wait_for_selector("text=Evaluate a checkpoint")
    _pick(page, "Labelled folder", str(runs.parent / "data" / "mislabelled"))  # a typed path is taken as it is
    page.get_by_role("button", name="Evaluate").click()
    page.wait_for_selector("text=mAP@[.5:.95]", timeout=120_000)
    page.get_by_role("tab", name="Files").click()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download all (zip)").click()
    with zipfile.ZipFile(download.value.path()) as bundle:
        assert {"metrics.json", "errors.csv", "confusion.csv", "pr.csv", "confusion.png"} <= set(bundle.namelist())
        errors = list(csv.DictReader(io.TextIOWrapper(bundle.open("errors.csv"), "utf-8")))
    assert errors, "every number is labelled wrong"
    page.get_by_role("tab", name="Confusion").click()
    page.locator(".js-plotly-plot >> visible=true").first.wait_for()
    page.get_by_role("tab", name="Failures").click()
    page.wait_for_selector(f"text={len(errors)} of {len(errors)} wrong images")
    digit = errors[0]["truth"][0]
    _pick(page, "True number holds", digit)
    with_digit = sum(digit in row["truth"] for row in errors)
    page.wait_for_selector(f"text={with_digit} of {len(errors)} wrong images")
    expect(page.locator('[data-testid="stImageCaption"]', has_text="truth")).to_have_count(min(with_digit, 6))
    _shot(page, "evaluate.png")
    page.close()


def _photo_jpeg(fonts, size):
    from core import synth

    rng, np_rng = synth.sample_rngs(31, "browser-photo", 2)
    photo, _ = synth.render_photo_scene(rng, fonts, np_rng)
    buffer = io.BytesIO()
    photo.convert("RGB").resize(size).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def test_a_large_photo_is_sent_reduced_and_names_keep_their_ids(browser, app, tmp_path, fonts):
    url, _ = app
    big = tmp_path / "IMG_4000.jpg"
    big.write_bytes(_photo_jpeg(fonts, (4000, 3000)))
    page = open_page(browser, url)
    page.wait_for_selector("text=Detect house numbers")
    started = time.perf_counter()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(big))
    page.wait_for_selector('[data-testid="stMetricValue"]', timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for()
    shown_in = time.perf_counter() - started
    # The picture goes as a JPEG data URI (plotly's go.Image source), not as a typed array of pixels.
    source = page.evaluate("() => document.querySelector('.js-plotly-plot').data[0].source")
    assert source.startswith("data:image/jpeg;base64,") and len(source) < 1_000_000, len(source)
    size = page.evaluate("(src) => new Promise(done => { const picture = new Image();"
                         " picture.onload = () => done([picture.naturalWidth, picture.naturalHeight]);"
                         " picture.src = src; })", source)
    assert size == [1024, 768], "the browser gets a 1,024 px picture, not 12 Mpx"
    assert shown_in < 30, f"{shown_in:.1f} s to show a 4000x3000 photo"
    page.close()

    # The same files in another order get the same ids (image_ids.csv, as core.predict writes it).
    files = []
    for name in ("door.jpg", "7.png", "back.jpg"):
        (tmp_path / name).write_bytes(_house_number_png("31"))
        files.append(str(tmp_path / name))
    mappings = []
    for order in (files, files[::-1]):
        page = open_page(browser, url)
        page.wait_for_selector("text=Detect house numbers")
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(order)
        with page.expect_download() as download:
            page.get_by_role("button", name="Download image_ids.csv").click()
        mappings.append(sorted(open(download.value.path()).read().splitlines()))
        page.close()
    assert mappings[0] == mappings[1] == ["7.png,7", "back.jpg,8", "door.jpg,9", "file_name,image_id"]


def test_train_form_offers_the_preset_that_fits_the_machine(browser, app, tiny_data):
    url, _ = app
    page = open_page(browser, url + "/train")
    _new_run_form(page)
    expect(page.get_by_role("radio", name="CPU quick: digitnet_fpn")).to_be_checked()
    expect(page.get_by_text("Final learning rate (eta_min)", exact=True)).to_be_visible()
    page.get_by_text("GPU reference recipe", exact=True).click()
    page.wait_for_selector("text=This machine has no CUDA GPU")
    _pick(page, "Scheduler", "step")
    expect(page.get_by_text("Step every (epochs)", exact=True)).to_be_visible()
    expect(page.get_by_text("Final learning rate (eta_min)", exact=True)).to_have_count(0)
    page.get_by_text("CPU quick: digitnet_fpn", exact=True).click()
    settle(page)
    page.close()


def _new_run_form(page):
    """The Train page once drawn, with its "New run" form unfolded."""
    page.wait_for_selector("text=Train a detector")
    page.wait_for_selector("text=New run")
    settle(page)
    _open_new_run(page)


def _open_new_run(page):
    """Unfold "New run" if it is folded (its details element says so; visibility flickers during a rerun)."""
    details = page.locator("details").filter(has=page.locator("summary", has_text="New run"))
    if details.get_attribute("open") is None:
        page.locator("summary", has_text="New run").click()
    page.get_by_label("Data folder", exact=True).wait_for()


def _fill(page, label, value):
    settle(page)
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Tab")


def _launch(page, tiny_data, name, epochs):
    _fill(page, "Data folder", tiny_data)
    page.wait_for_selector("text=Run name")
    _fill(page, "Run name", name)
    _pick(page, "Architecture", "digitnet_fpn")
    _pick(page, "Device", "cpu")
    for label, value in (("Input short side (px)", 64), ("Input long side cap (px)", 160), ("Epochs", epochs),
                         ("Share of training set per epoch", 1.0), ("Learning rate", 0.001)):
        _fill(page, label, value)
    _shot(page, "train-form.png")
    page.get_by_role("button", name="Launch training").click()
    page.wait_for_selector(f"text=Launched {name}")


def test_train_page_launches_a_run_and_streams_its_log(browser, app, tiny_data):
    url, runs = app
    page = open_page(browser, url + "/train")
    page.wait_for_selector("text=Train a detector")
    _launch(page, tiny_data, "browser-run", epochs=1)
    # The live view tails the run's log while it trains, then shows it finished.
    page.wait_for_selector("text=/core.train: digitnet_fpn on cpu/", timeout=120_000)
    page.wait_for_selector("text=/completed ·/", timeout=180_000)  # the status line, not the log's last line
    # The page redraws in parts: the log below the status line may arrive a moment later.
    expect(page.locator('[data-testid="stCode"]').first).to_contain_text("core.train: completed", timeout=30_000)
    log = page.locator('[data-testid="stCode"]').first.inner_text()
    assert "epoch 1/1" in log and "core.train: completed" in log, log
    assert (runs / "browser-run" / "best.pt").exists()
    page.wait_for_selector(".js-plotly-plot")  # the live mAP/loss chart
    # mAP has its own 0-1 axis: a near-zero mAP sits at the bottom, not above the loss.
    assert page.evaluate("() => document.querySelector('.js-plotly-plot').layout.yaxis.range") == [0, 1]
    _shot(page, "train.png")
    page.close()
    # The Schedulers page picks the new run beside the shipped pair.
    page = open_page(browser, url + "/schedulers")
    page.wait_for_selector(".js-plotly-plot")
    assert "browser-run" in page.locator(".js-plotly-plot .legend").first.text_content()
    page.close()
    # The finished run's best.pt is offered on the Detect page without restarting the app.
    page = open_page(browser, url)
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    expect(page.get_by_role("option", name=re.compile("browser-run"))).to_have_count(1)
    page.close()


def test_train_form_keeps_its_values_while_the_user_is_on_another_page(browser, app, tiny_data):
    url, _ = app
    page = open_page(browser, url + "/train")
    _new_run_form(page)
    _fill(page, "Data folder", tiny_data)
    page.wait_for_selector("text=Run name")
    _fill(page, "Run name", "keep-me")
    _fill(page, "Epochs", 3)
    settle(page)
    page.get_by_role("link", name="Schedulers").click()
    page.wait_for_selector("text=Compare learning-rate schedulers")
    page.get_by_role("link", name="Train").click()
    _new_run_form(page)
    expect(page.get_by_label("Data folder", exact=True)).to_have_value(tiny_data)
    expect(page.get_by_label("Run name", exact=True)).to_have_value("keep-me")
    expect(page.get_by_label("Epochs", exact=True)).to_have_value("3")
    page.close()


def test_train_page_reattaches_after_a_refresh_and_stops_a_run(browser, app, tiny_data):
    url, runs = app
    page = open_page(browser, url + "/train")
    _new_run_form(page)  # folded once runs exist
    _launch(page, tiny_data, "long-run", epochs=500)
    page.wait_for_selector("text=/epoch \\d+\\/500/", timeout=120_000)
    # A browser refresh starts a new session: the page reattaches to the run still going.
    page.reload()
    page.wait_for_selector('[data-testid="stApp"]')
    page.wait_for_selector("text=/epoch \\d+\\/500/", timeout=60_000)
    picker = page.get_by_role("combobox", name="Run", exact=True)
    expect(picker).to_have_value(re.compile(r"long-run \(running\)$"))
    page.wait_for_selector("text=/epoch 1\\/500 +lr/", timeout=120_000)  # a finished epoch: last.pt exists
    # The run's Stop, not Streamlit's own header button shown while a rerun is going.
    page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Stop").click()
    # Asked once more before hours of training end.
    confirm = page.get_by_role("button", name="Stop the run")
    confirm.wait_for()
    _shot(page, "train-stop.png")
    confirm.click()
    page.wait_for_selector("text=/stopped on request \\(SIGTERM\\)/", timeout=120_000)
    expect(picker).to_have_value(re.compile(r"long-run \(stopped\)$"), timeout=30_000)  # the label follows
    # The picker's label and the Resume button come from the same rerun; wait for the button as for the label.
    expect(page.get_by_role("button", name="Resume this run")).to_have_count(1, timeout=30_000)
    run_dir = runs / "long-run"
    assert not is_locked(str(run_dir))
    assert load_checkpoint(str(run_dir / "last.pt"))["epoch"] >= 1
    page.close()
