"""The Streamlit pages through streamlit.testing.v1.AppTest (fragments do not run here;
the live log view is covered by the browser tests)."""

import io
import json
import os
import shutil
import time

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import ROOT, tag_rotated
from core import predict as predict_mod
from core.data import load_split
from core.images import decode_image
from core.launcher import LaunchError, remove_failed_run
from core.model import input_size_of
from core.predict import ENLARGED_PAST_AUTO, NumberReader, enlarged_past_auto, load_model, predict_images, read_number
from core.runs import RunLock, is_locked, run_status
from pages import checkpoint_label, file_stem


@pytest.fixture()
def app_dirs(tmp_path, monkeypatch):
    runs, ckpts = tmp_path / "runs", tmp_path / "checkpoints"
    runs.mkdir()
    ckpts.mkdir()
    monkeypatch.setenv("DIGIT_STUDIO_RUNS", str(runs))
    monkeypatch.setenv("DIGIT_STUDIO_CHECKPOINTS", str(ckpts))
    monkeypatch.chdir(ROOT)
    return runs, ckpts


def _app(page=None):
    at = AppTest.from_file(os.path.join(ROOT, "streamlit_app.py"), default_timeout=120)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def _png(path):
    return open(path, "rb").read()


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _by_label(widgets, label):
    return next(w for w in widgets if w.label == label)


def _install_tiny(runs, tiny_run):
    """The tiny run's best.pt as runs/tiny/best.pt, where the pages list checkpoints."""
    (runs / "tiny").mkdir()
    shutil.copy(os.path.join(tiny_run, "best.pt"), runs / "tiny" / "best.pt")


def _record_predictions(monkeypatch):
    """Every call the pages make to core.predict.predict_images, as (file names, keyword arguments),
    and the real function (to compute what the page should show)."""
    calls = []
    real = predict_mod.predict_images

    def recording(loaded, sources, *args, **kwargs):
        calls.append(([name for name, _ in sources], kwargs))
        return real(loaded, sources, *args, **kwargs)

    monkeypatch.setattr(predict_mod, "predict_images", recording)
    return calls, real


def test_detect_page_without_a_model_says_how_to_get_one(app_dirs):
    at = _app()
    assert "Train" in at.info[0].value and "core.train" in at.info[0].value


def test_upload_shows_the_number_read(app_dirs, tiny_run, tiny_data):
    runs, _ = app_dirs
    _install_tiny(runs, tiny_run)
    at = _app()
    assert "digitnet_fpn" in at.caption[0].value and "cpu" in at.caption[0].value
    path = os.path.join(tiny_data, "test", "3.png")
    at.file_uploader[0].set_value(("3.png", _png(path), "image/png"))
    at.run()
    assert not at.exception, at.exception
    loaded = load_model(str(runs / "tiny" / "best.pt"), "cpu")
    assert (at.slider[0].value, at.slider[1].value) == (loaded.reader.anchor, loaded.reader.member), \
        "the reader's sliders start at the checkpoint's own reader"
    expected = read_number(predict_images(loaded, [("3.png", _png(path))]).detections[0], loaded.reader)
    shown = at.metric[0].value
    assert shown == (expected if expected != "-1" else "no digit (-1)")
    assert any("ms per image" in c.value and c.value.endswith("input size auto") for c in at.caption)


def test_a_letter_class_checkpoint_says_so_and_reads_digits_only(app_dirs, tiny_run, tiny_data):
    from core.checkpoint import load_checkpoint, save_checkpoint
    from core.model import build_model, class_names

    runs, _ = app_dirs
    payload = load_checkpoint(os.path.join(tiny_run, "best.pt"))
    kwargs = {**payload["model_kwargs"], "num_classes": 12, "box_score_thresh": 0.0}  # the tiny model is unsure
    model, kwargs, _ = build_model(kwargs["arch"], kwargs, weights=os.path.join(tiny_run, "best.pt"))
    head = model.roi_heads.box_predictor.cls_score
    with torch.no_grad():  # letters as likely as the tiny model's likeliest digit, "0": both kinds of box come out
        head.weight[11], head.bias[11] = head.weight[1], head.bias[1]
    (runs / "letters").mkdir()
    save_checkpoint(str(runs / "letters" / "best.pt"),
                    {**payload, "model_kwargs": kwargs, "class_names": class_names(12), "model": model.state_dict()})
    at = _app()
    assert "has a letter class: a box it calls a letter is not read as a digit" in at.caption[0].value
    path = os.path.join(tiny_data, "test", "3.png")
    at.file_uploader[0].set_value(("3.png", _png(path), "image/png"))
    at.run()
    at.slider[1].set_value(0.0)  # every box the model keeps
    at.run()
    assert not at.exception, at.exception
    table = next(df.value for df in at.dataframe if "digit" in df.value.columns)
    assert len(table) and table["digit"].between(0, 9).all()


def test_input_size_control_runs_the_model_at_that_size(app_dirs, tiny_run, tiny_data, monkeypatch):
    runs, _ = app_dirs
    _install_tiny(runs, tiny_run)
    calls, real = _record_predictions(monkeypatch)
    at = _app()
    size = next(s for s in at.selectbox if s.label == "Input size")
    assert size.value == "auto", "the checkpoint's own policy by default"
    path = os.path.join(tiny_data, "test", "5.png")
    at.file_uploader[0].set_value(("5.png", _png(path), "image/png"))
    at.run()
    assert not [w for w in at.warning if "more than auto does" in w.value], "auto enlarges nothing past itself"
    assert {b.label for b in at.get("download_button")} == {"Download pred.json (Task 1)",
                                                            "Download pred.csv (Task 2)"}, "one upload, its files"
    next(s for s in at.selectbox if s.label == "Input size").set_value(256)
    at.run()
    assert not at.exception, at.exception
    assert [kwargs.get("input_size") for _, kwargs in calls] == [None, 256], "auto runs the checkpoint's policy; 256 runs the model at a 256 px short side"
    loaded = load_model(str(runs / "tiny" / "best.pt"), "cpu")
    expected = read_number(real(loaded, [("5.png", _png(path))], input_size=256).detections[0], loaded.reader)
    assert at.metric[0].value == (expected if expected != "-1" else "no digit (-1)")
    enlarged = enlarged_past_auto(loaded, Image.open(path).size, 256)
    assert enlarged > ENLARGED_PAST_AUTO, "the tiny model's auto keeps this image small: 256 px enlarges it"
    assert [w.value for w in at.warning if "more than auto does" in w.value] == [
        f"Input size 256 px enlarges this image {enlarged:.1f}x more than auto does: a number that fills it grows "
        "past the digit sizes the model learned and is read worse. Fixed sizes help with small digits in large "
        "photos; auto reads a close-up at its own size."]


def test_shipped_model_reads_a_clear_house_number(app_dirs, tmp_path):
    """With the shipped default.pt the page reads a plainly drawn number correctly."""
    default = os.path.join(ROOT, "checkpoints", "default.pt")
    assert os.path.exists(default), "checkpoints/default.pt is part of the repository"
    _, ckpts = app_dirs
    shutil.copy(default, ckpts / "default.pt")
    from PIL import ImageDraw, ImageFont

    image = Image.new("RGB", (150, 70), (235, 235, 225))
    font = ImageFont.load_default(size=48)  # Pillow's own font: present on every machine
    ImageDraw.Draw(image).text((18, 8), "274", font=font, fill=(20, 20, 30))
    at = _app()
    at.file_uploader[0].set_value(("5.png", _png_bytes(image), "image/png"))
    at.run()
    assert not at.exception, at.exception
    assert at.metric[0].value == "274"


def test_an_iphone_photo_in_heic_taken_sideways_is_read_upright(app_dirs):
    """An iPhone saves HEIC, its pixels as the sensor lay and the turn to show them upright in the file."""
    _, ckpts = app_dirs
    shutil.copy(os.path.join(ROOT, "checkpoints", "default.pt"), ckpts / "default.pt")
    from PIL import ImageDraw, ImageFont

    image = Image.new("RGB", (150, 70), (235, 235, 225))
    ImageDraw.Draw(image).text((18, 8), "274", font=ImageFont.load_default(size=48), fill=(20, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    buffer = io.BytesIO()
    image.rotate(90, expand=True).save(buffer, "HEIF", quality=90, exif=exif.tobytes())
    at = _app()
    at.file_uploader[0].set_value(("IMG_0274.HEIC", buffer.getvalue(), "image/heic"))
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.metric[0].value == "274"
    assert any("IMG_0274.HEIC" in m.value and "150x70 px" in m.value for m in at.markdown)


def test_a_photo_read_twice_says_why(app_dirs):
    """The shipped model confirms a photo's lone digit at every view; the page says so, and what it changed."""
    _, ckpts = app_dirs
    shutil.copy(os.path.join(ROOT, "checkpoints", "default.pt"), ckpts / "default.pt")
    from PIL import ImageDraw, ImageFont

    photo = Image.new("RGB", (640, 480), (255, 255, 255))  # reduced by the input size policy: a photo
    plate = Image.new("RGB", (40, 50), (232, 230, 220))
    ImageDraw.Draw(plate).text((7, 6), "7", font=ImageFont.load_default(size=34), fill=(25, 25, 35))
    photo.paste(plate, (40, 300))
    crop = photo.crop((30, 290, 90, 360))  # the same plate seen at its own size: read once
    at = _app()
    at.file_uploader[0].set_value([(name, _png_bytes(image), "image/png")
                                   for name, image in (("photo.png", photo), ("crop.png", crop))])
    at.run()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric] == ["7", "7"]
    twice = [c.value for c in at.caption if c.value.startswith("Read twice: ")]
    assert len(twice) == 1 and twice[0].startswith(
        "Read twice: its lone digit was read again, whole, at 0.8x, 1x, 1.25x to confirm it: the sizes")


def test_batch_with_a_corrupt_file_still_runs_the_others(app_dirs, tiny_run, tiny_data):
    runs, _ = app_dirs
    _install_tiny(runs, tiny_run)
    at = _app()
    files = [("1.png", _png(os.path.join(tiny_data, "test", "1.png")), "image/png"),
             ("bad.png", b"\x89PNG\r\n\x1a\n garbage", "image/png"),
             ("2.png", _png(os.path.join(tiny_data, "test", "2.png")), "image/png")]
    at.file_uploader[0].set_value(files)
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("bad.png" in e for e in errors)
    table = at.dataframe[0].value
    assert list(table["file"]) == ["1.png", "bad.png", "2.png"]
    assert table["status"].tolist() == ["ok", "not read: see the error above", "ok"]
    ms = table["ms"].tolist()
    assert ms[0] > 0 and ms[2] > 0 and ms[1] != ms[1], "each readable file's own model time; none for bad.png"
    assert len(at.metric) == 2, "one result block per readable image"
    downloads = {b.label for b in at.get("download_button")}
    assert downloads == {"Download pred.json (Task 1)", "Download pred.csv (Task 2)", "Download image_ids.csv"}
    assert "bad.png" in table["file"].tolist() and 3 in table["image_id"].tolist(), "after 1 and 2: id 3"


def test_two_uploads_of_one_name_keep_their_ids_in_any_order_and_are_named(app_dirs, tiny_run, tiny_data):
    runs, _ = app_dirs
    _install_tiny(runs, tiny_run)
    first = ("1.png", _png(os.path.join(tiny_data, "test", "1.png")), "image/png")
    second = ("1.png", _png(os.path.join(tiny_data, "test", "2.png")), "image/png")
    ids = []
    for files in ([first, second], [second, first]):
        at = _app()
        at.file_uploader[0].set_value(files)
        at.run()
        assert not at.exception, at.exception
        assert any("1.png" in w.value for w in at.warning), "the repeated name is named"
        assert "Download image_ids.csv" in {b.label for b in at.get("download_button")}
        table = at.dataframe[0].value
        ids.append(dict(zip((f[1] for f in files), table["image_id"])))
    assert ids[0] == ids[1] and sorted(ids[0].values()) == [1, 2]


def test_an_upload_with_only_an_unreadable_file_says_nothing_was_read(app_dirs, tiny_run):
    runs, _ = app_dirs
    _install_tiny(runs, tiny_run)
    at = _app()
    at.file_uploader[0].set_value(("notes.png", b"just text", "image/png"))
    at.run()
    assert not at.exception, at.exception
    assert "No file of this upload could be read" in at.error[0].value
    assert "no image read" in " ".join(c.value for c in at.caption)


def test_a_result_read_again_from_the_cache_says_so(app_dirs, tiny_run, tiny_data):
    runs, _ = app_dirs
    _install_tiny(runs, tiny_run)
    at = _app()
    at.file_uploader[0].set_value(("4.png", _png(os.path.join(tiny_data, "test", "4.png")), "image/png")).run()
    assert any("ms per image on" in c.value and "read earlier" not in c.value for c in at.caption)
    at.file_uploader[0].set_value([]).run()
    at.file_uploader[0].set_value(("4.png", _png(os.path.join(tiny_data, "test", "4.png")), "image/png")).run()
    assert any("read earlier" in c.value and "not run again" in c.value for c in at.caption)


def test_adding_a_file_to_the_upload_reads_only_that_file(app_dirs, tiny_run, tiny_data, monkeypatch):
    runs, _ = app_dirs
    _install_tiny(runs, tiny_run)
    calls, real = _record_predictions(monkeypatch)
    at = _app()
    first = [(n, _png(os.path.join(tiny_data, "test", n)), "image/png") for n in ("1.png", "2.png")]
    at.file_uploader[0].set_value(first).run()
    assert sorted(name for names, _ in calls for name in names) == ["1.png", "2.png"]
    more = first + [("3.png", _png(os.path.join(tiny_data, "test", "3.png")), "image/png")]
    at.file_uploader[0].set_value(more).run()
    assert not at.exception, at.exception
    assert sorted(name for names, _ in calls for name in names) == ["1.png", "2.png", "3.png"], \
        "the two files read before are not run again"
    assert any(c.value.startswith("1 image(s) in") and "2 image(s), read earlier by this app" in c.value
               for c in at.caption)
    loaded = load_model(str(runs / "tiny" / "best.pt"), "cpu")
    alone = real(loaded, [(n, d) for n, d, _ in more])
    table = at.dataframe[0].value
    assert list(table["image_id"]) == alone.image_ids
    assert list(table["number read"]) == [read_number(d, loaded.reader) for d in alone.detections], \
        "read file by file, the batch reads as it does in one call"


def test_reader_sliders_read_again_without_running_the_model(app_dirs, tiny_run, tiny_data, monkeypatch):
    runs, _ = app_dirs
    _install_tiny(runs, tiny_run)
    calls, real = _record_predictions(monkeypatch)
    at = _app()
    at.file_uploader[0].set_value(("4.png", _png(os.path.join(tiny_data, "test", "4.png")), "image/png"))
    at.run()
    runs_before = len(calls)
    assert runs_before == 1
    loaded = load_model(str(runs / "tiny" / "best.pt"), "cpu")
    detection = real(loaded, [("4.png", _png(os.path.join(tiny_data, "test", "4.png")))]).detections[0]
    for anchor, member, reader in ((0.0, 0.0, NumberReader(0.0, 0.0, loaded.reader.one_line)),
                                   (0.4, 0.1, NumberReader(0.4, 0.1, loaded.reader.one_line)),
                                   (0.3, 0.9, NumberReader(0.3, 0.3, loaded.reader.one_line))):  # member capped
        at.slider[0].set_value(anchor)
        at.slider[1].set_value(member)
        at.run()
        assert not at.exception
        expected = read_number(detection, reader)
        assert at.metric[0].value == (expected if expected != "-1" else "no digit (-1)"), (anchor, member)
        assert any(reader.describe() in c.value for c in at.sidebar.caption), "the sidebar says how numbers are read"
        assert any("is above the first" in c.value for c in at.sidebar.caption) == (member > anchor)
        why = [c.value for c in at.main.caption if c.value.startswith("No number read")]
        assert len(why) == (expected == "-1"), "a number not read is explained beside it"
    best = max(detection["scores"])
    for member, shown in ((best / 2, ""), (0.9, "no detection scores 0.90 or more, and ")):
        at.slider[0].set_value(1.0)  # a score no digit reaches: the number goes, and the page says why
        at.slider[1].set_value(member).run()
        assert at.metric[0].value == "no digit (-1)"
        rule = NumberReader(1.0, at.slider[1].value, loaded.reader.one_line).describe()
        want = f"No number read: {shown}the surest digit scores {best:.3f}; {rule}."
        assert want in [c.value for c in at.main.caption], [c.value for c in at.main.caption]
    assert len(calls) == runs_before


def test_a_checkpoints_gap_score_stays_while_it_is_below_the_member_slider(app_dirs, tiny_run, tiny_data):
    from core.checkpoint import main as checkpoint_main

    runs, _ = app_dirs
    (runs / "tiny").mkdir()
    assert checkpoint_main(["export", os.path.join(tiny_run, "best.pt"), str(runs / "tiny" / "best.pt"),
                            "--task2-reader", "0.5,0.4", "--task2-gap", "0.2"]) == 0
    at = _app()
    at.file_uploader[0].set_value(("4.png", _png(os.path.join(tiny_data, "test", "4.png")), "image/png")).run()
    assert not at.exception, at.exception
    assert any("a digit between two of them needs >= 0.20" in c.value for c in at.sidebar.caption)
    at.slider[1].set_value(0.1).run()  # a member score below the gap's: the gap has nothing left to add
    assert not at.exception, at.exception
    assert not any("between two of them needs" in c.value for c in at.sidebar.caption)
    assert any("this checkpoint's 0.20 for a digit between two of the number's is off" in c.value
               for c in at.sidebar.caption), "the page says why the checkpoint's gap no longer counts"


def test_a_checkpoint_with_photo_scores_reads_photos_with_their_own_sliders(app_dirs, tiny_run, tiny_data):
    from PIL import Image

    from core.checkpoint import main as checkpoint_main

    runs, _ = app_dirs
    (runs / "tiny").mkdir()
    assert checkpoint_main(["export", os.path.join(tiny_run, "best.pt"), str(runs / "tiny" / "best.pt"),
                            "--task2-reader", "0.0,0.0", "--photo-reader", "1.0,1.0"]) == 0
    loaded = load_model(str(runs / "tiny" / "best.pt"), "cpu")
    crop = Image.open(os.path.join(tiny_data, "test", "4.png")).convert("RGB")
    side = input_size_of(loaded.model).max_short
    crop.thumbnail((side, side))  # small enough for the model to read unreduced (a crop), whatever the fonts drew
    photo = Image.new("RGB", (1280, 720), "grey")
    photo.paste(crop, (600, 300))
    at = _app()
    at.file_uploader[0].set_value([("crop.png", _png_bytes(crop), "image/png"),
                                   ("photo.png", _png_bytes(photo), "image/png")]).run()
    assert not at.exception, at.exception
    found = predict_mod.predict_images(loaded, [("crop.png", _png_bytes(crop)),
                                                ("photo.png", _png_bytes(photo))]).detections
    assert [d["photo"] for d in found] == [False, True]
    assert read_number(found[1], NumberReader(0.0, 0.0)) != "-1", "the photo holds digits the photo scores refuse"
    assert [s.label for s in at.slider] == ["Score to read a number", "Score of its other digits",
                                            "Photos: Score to read a number", "Photos: Score of its other digits"]
    assert [s.value for s in at.slider] == [0.0, 0.0, 1.0, 1.0], "each pair starts at the checkpoint's scores"
    table = at.dataframe[0].value
    assert list(table["number read"]) == [read_number(found[0], NumberReader(0.0, 0.0)), "-1"]
    assert any(c.value.startswith("No number read (a photo)") and "In a photo" not in c.value for c in at.main.caption)
    assert any(m.value.endswith("read as a photo, with its scores") for m in at.main.markdown)
    at.slider[2].set_value(0.0)
    at.slider[3].set_value(0.0).run()  # the photo's own scores lowered: it reads as the crop reader would
    assert list(at.dataframe[0].value["number read"]) == [read_number(d, NumberReader(0.0, 0.0)) for d in found]
    assert any("In a photo: a number needs one digit scoring >= 0.00" in c.value for c in at.sidebar.caption)


def test_the_detect_page_names_a_wider_models_width(app_dirs, tiny_run):
    from core.checkpoint import grow

    runs, _ = app_dirs
    (runs / "wide").mkdir(parents=True)
    grow(os.path.join(tiny_run, "best.pt"), str(runs / "wide" / "best.pt"), 1.5)
    at = _app()
    at.run()
    assert not at.exception, at.exception
    assert any("**digitnet_fpn** at 1.5x width" in c.value for c in at.caption), [c.value for c in at.caption]


def _fake_run(folder, scheduler, maps):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"scheduler": scheduler, "arch": "digitnet_fpn", "epochs": len(maps)}))
    history = [{"epoch": i + 1, "mAP": m, "AP50": m + 0.2, "AP75": m, "loss": 1.0 / (i + 1), "lr": 1e-3 * 0.7**i,
                "seconds": 60.0} for i, m in enumerate(maps)]
    (folder / "history.json").write_text(json.dumps(history))


def test_schedulers_page_overlays_the_shipped_pair(app_dirs):
    runs, ckpts = app_dirs
    _fake_run(ckpts / "curves" / "cosine", "cosine", [0.1, 0.3, 0.5, 0.55])
    _fake_run(ckpts / "curves" / "step", "step", [0.1, 0.35, 0.45, 0.47])
    for name in ("old", "mine", "newest"):
        _fake_run(runs / name, "step", [0.2])
        os.utime(runs / name, (time.time() + len(name), time.time() + len(name)))  # old < mine < newest
    _fake_run(runs / "starting", "cosine", [])  # no finished epoch yet
    (runs / "broken").mkdir()
    (runs / "broken" / "history.json").write_text("{not json")
    at = _app("pages/schedulers.py")
    assert at.multiselect[0].value == ["cosine (shipped)", "step (shipped)", "newest", "mine"], \
        "the shipped pair and the user's two newest runs"
    assert "old" in at.multiselect[0].options and "starting" not in at.multiselect[0].options
    assert any("starting" in c.value and "finish an epoch" in c.value for c in at.caption)
    assert any("broken" in w.value for w in at.warning)
    summary = at.dataframe[0].value
    assert list(summary["run"]) == ["cosine (shipped)", "step (shipped)", "mine", "newest"]
    assert not summary["best mAP"].isna().any(), "no None cells"
    assert list(summary["best epoch"])[:2] == [4, 4]
    assert summary["best mAP"].tolist()[:2] == pytest.approx([0.55, 0.47])
    at.slider[0].set_value(0.5)
    at.run()
    traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    stars = {t["name"]: t["y"] for t in traces if t.get("marker", {}).get("symbol") == "star"}
    assert stars == {"cosine (shipped): best mAP at epoch 4": [0.55], "step (shipped): best mAP at epoch 4": [0.47],
                     "mine: best mAP at epoch 1": [0.2], "newest: best mAP at epoch 1": [0.2]}, \
        "the best-epoch star sits on the measured value, not the smoothed line"
    assert any(t["name"] == "cosine (shipped) (raw)" for t in traces), "the raw line stays, faint"
    at.selectbox[0].set_value("loss")
    at.run()
    assert not at.exception
    traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert not any(t.get("marker", {}).get("symbol") == "star" for t in traces), "the best-mAP star: mAP charts only"
    at.selectbox[0].set_value("lr")
    at.run()
    assert at.slider[0].disabled
    layout = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]
    assert layout["yaxis"]["exponentformat"] == "e" and layout["yaxis"]["tickformat"] == ".0e"
    traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert not any(t["name"].endswith("(raw)") for t in traces), "the learning rate is never smoothed"


def test_schedulers_page_says_which_runs_without_an_epoch_will_appear(app_dirs):
    runs, _ = app_dirs
    _fake_run(runs / "done", "step", [0.2])
    _fake_run(runs / "starting", "cosine", [])  # config.json written, nothing logged yet
    _log_events(runs / "training", {"event": "start", "time": 1, "epochs": 3})
    _log_events(runs / "bad-data", {"event": "error", "time": 1, "message": "train.json: file not found"})
    _log_events(runs / "killed", {"event": "start", "time": 1, "epochs": 3})
    with RunLock(str(runs / "training")):
        at = _app("pages/schedulers.py")
    coming = [c.value for c in at.caption if "until they finish an epoch" in c.value]
    ended = [c.value for c in at.caption if "will not be" in c.value]
    assert len(coming) == 1 and "starting, training." in coming[0] and "bad-data" not in coming[0], coming
    assert len(ended) == 1 and "bad-data (failed), killed (died)." in ended[0], ended
    assert at.multiselect[0].options == ["done"]


def test_schedulers_page_with_no_runs(app_dirs):
    at = _app("pages/schedulers.py")
    assert "No runs are stored yet" in at.info[0].value


def test_train_form_refuses_weights_of_another_width_naming_the_width_to_set(app_dirs, tiny_run, tiny_data):
    from core.checkpoint import grow

    runs, _ = app_dirs
    runs.mkdir(exist_ok=True)
    grow(os.path.join(tiny_run, "best.pt"), str(runs / "wide-start.pt"), 1.5)
    at = _app("pages/train.py")
    _by_label(at.text_input, "Data folder").set_value(tiny_data)
    at.run()
    weights = _by_label(at.selectbox, "Start from weights")
    offered = [option for option in weights.options if option.endswith("wide-start.pt")]
    assert offered, "a checkpoint written straight into runs/ is offered"
    weights.set_value(offered[0])
    _by_label(at.text_input, "Run name").set_value("wide-by-mistake")
    _by_label(at.button, "Launch training").click()
    at.run()
    assert any("is a digitnet_fpn of width 1.5, but this run builds width 1: set the model width to 1.5" in e.value
               and "Model width (digitnet_fpn)" in e.value for e in at.error), [e.value for e in at.error]
    assert not (runs / "wide-by-mistake").exists(), "nothing launched, no failed run left behind"


def test_train_page_offers_every_checkpoint_in_runs_lists_only_runs_and_checks_weights_before_launch(app_dirs,
                                                                                                      tiny_data):
    runs, ckpts = app_dirs
    shutil.copy(os.path.join(ROOT, "checkpoints", "default.pt"), ckpts / "default.pt")
    _log_events(runs / "ft1", {"event": "start", "time": 1, "epochs": 1},
                {"event": "end", "time": 2, "status": "completed"}, epochs=1)
    for name in ("best.pt", "last.pt", "read-as-weights.pt"):  # what core.train's end-of-run hint exports
        (runs / "ft1" / name).write_bytes(b"x")
    (runs / "badpt").mkdir()  # a file a user copied in: no checkpoint, and no run
    torch.save({"hello": torch.zeros(1)}, runs / "badpt" / "best.pt")
    at = _app("pages/train.py")
    assert _by_label(at.selectbox, "Run").options == ["ft1 (completed)"], "a folder holding only a .pt file is no run"
    weights = _by_label(at.selectbox, "Start from weights")
    assert weights.options[:3] == ["auto", "none", str(ckpts / "default.pt")]
    assert str(runs / "ft1" / "read-as-weights.pt") in weights.options, "what the end-of-run hint names is offered"
    assert str(runs / "badpt" / "best.pt") in weights.options
    assert not [option for option in weights.options if option.endswith("last.pt")], "resume files are not offered"

    _by_label(at.text_input, "Data folder").set_value(tiny_data)
    _by_label(at.selectbox, "Start from weights").set_value(str(ckpts / "default.pt"))
    at.run()
    assert _by_label(at.number_input, "Learning rate").value == pytest.approx(1e-3), "the CPU preset's"
    warned = [w.value for w in at.warning if "Learning rate 0.001 is one to train from scratch" in w.value]
    assert len(warned) == 1 and "Fine-tuning usually takes 1e-4 to 2e-4" in warned[0], [w.value for w in at.warning]
    _by_label(at.number_input, "Learning rate").set_value(1e-4).run()
    assert not [w for w in at.warning if "train from scratch" in w.value], "a fine-tuning rate is not questioned"

    _by_label(at.selectbox, "Start from weights").set_value(str(runs / "badpt" / "best.pt"))
    _by_label(at.text_input, "Run name").set_value("from-badpt")
    _by_label(at.button, "Launch training").click()
    at.run()
    assert any(f"{runs}/badpt/best.pt is not a checkpoint: no digitnet_fpn weights in it (a dict of 'hello')" in e.value
               and "(check: Start from weights)" in e.value for e in at.error), [e.value for e in at.error]
    assert not (runs / "from-badpt").exists(), "nothing launched, no failed run left behind"


def test_train_page_says_a_data_folder_that_is_not_there_is_a_path_to_check(app_dirs, tmp_path):
    runs, _ = app_dirs
    nowhere = str(tmp_path / "nowhere")
    at = _app("pages/train.py")
    _by_label(at.text_input, "Data folder").set_value(nowhere)
    at.run()
    assert any(w.value.startswith(f"No folder at `{nowhere}`: check the path, or generate a synthetic dataset there")
               for w in at.warning), [w.value for w in at.warning]
    assert [b for b in at.button if b.label == "Generate synthetic dataset"], "the offer stays"
    _by_label(at.text_input, "Run name").set_value("typo")
    _by_label(at.button, "Launch training").click()
    at.run()
    assert any(e.value == f"Not launched: no folder at {nowhere}: check the path, or generate a synthetic dataset "
                          "there (check: Data folder)" for e in at.error), [e.value for e in at.error]
    assert not (runs / "typo").exists()
    (tmp_path / "wall.jpg").write_bytes(b"x")
    _by_label(at.text_input, "Data folder").set_value(str(tmp_path / "wall.jpg"))
    at.run()
    assert any(w.value.startswith(f"`{tmp_path / 'wall.jpg'}` is a file: name the dataset folder") for w in at.warning)
    assert not [b for b in at.button if b.label == "Generate synthetic dataset"], "no offer to generate over a file"


def test_train_form_refuses_bad_names_and_launches_a_run(app_dirs, tiny_data):
    runs, _ = app_dirs
    at = _app("pages/train.py")
    _by_label(at.text_input, "Data folder").set_value(tiny_data)
    at.run()
    labels = {w.label for w in list(at.number_input) + list(at.selectbox) + list(at.checkbox) + list(at.text_input)}
    for name in ("Architecture", "Scheduler", "Epochs", "Learning rate", "Weight decay", "Batch size", "Device",
                 "Share of training set per epoch", "Cosine period T_max (epochs)", "Final learning rate (eta_min)"):
        assert name in labels, name
    assert "Step every (epochs)" not in labels and "Step factor (gamma)" not in labels, \
        "StepLR's fields only with the step scheduler"
    assert "`--lr` on the command line" in _by_label(at.number_input, "Learning rate").help, "names its CLI flag"
    # No GPU here: the CPU preset is the default, and the reference recipe warns before it is launched.
    assert at.radio[0].value == "CPU quick: digitnet_fpn"
    assert _by_label(at.selectbox, "Architecture").value == "digitnet_fpn"
    assert _by_label(at.number_input, "Learning rate").value == pytest.approx(1e-3)
    # 16 images, 10% a epoch, batch 16: 10 steps in all. The preset's 30 warm-up steps (a tenth of a run on 2,000
    # images) become a tenth of this run; 30 typed in would outlast it, and the form says so.
    assert _by_label(at.number_input, "Warm-up steps").value == 1 and not at.warning
    _by_label(at.number_input, "Warm-up steps").set_value(30).run()
    assert len(at.warning) == 1 and "Warm-up steps (30) outlast the whole run (10 optimisation steps" in \
        at.warning[0].value
    at.radio[0].set_value("GPU reference recipe").run()
    assert _by_label(at.selectbox, "Architecture").value == "fasterrcnn_resnet50_fpn_v2"
    assert _by_label(at.number_input, "Learning rate").value == pytest.approx(1e-4)
    assert "no CUDA GPU" in at.warning[0].value
    _by_label(at.selectbox, "Device").set_value("cpu").run()
    assert not at.warning, "16 images x 10% x 10 epochs at 0.06 images/s: minutes"
    _by_label(at.number_input, "Epochs").set_value(300).run()
    assert "hours on this machine's CPU" in at.warning[0].value
    _by_label(at.selectbox, "Scheduler").set_value("step").run()
    labels = {w.label for w in at.number_input}
    assert {"Step every (epochs)", "Step factor (gamma)"} <= labels and "Final learning rate (eta_min)" not in labels
    at.radio[0].set_value("CPU quick: digitnet_fpn").run()

    _by_label(at.text_input, "Run name").set_value("../escape")
    _by_label(at.button, "Launch training").click()
    at.run()
    assert any("not allowed" in e.value for e in at.error)
    assert not (runs.parent / "escape").exists()

    _by_label(at.text_input, "Run name").set_value("tiny-app")
    _by_label(at.selectbox, "Architecture").set_value("digitnet_fpn")
    _by_label(at.number_input, "Input short side (px)").set_value(64)
    _by_label(at.number_input, "Input long side cap (px)").set_value(160)
    _by_label(at.number_input, "Epochs").set_value(1)
    _by_label(at.number_input, "Share of training set per epoch").set_value(1.0)
    _by_label(at.selectbox, "Device").set_value("cpu")
    _by_label(at.button, "Launch training").click()
    at.run()
    assert not at.exception, at.exception
    assert any("Launched tiny-app" in s.value for s in at.success)
    assert _by_label(at.text_input, "Run name").value.startswith("run-"), "the next run is offered a fresh name"
    assert _by_label(at.number_input, "Epochs").value == 1, "the other settings stay"
    run_dir = runs / "tiny-app"
    deadline = time.time() + 120
    while time.time() < deadline and (is_locked(str(run_dir)) or run_status(str(run_dir))["state"] == "new"):
        time.sleep(0.5)
    status = run_status(str(run_dir))
    assert status["state"] == "completed", (status, (run_dir / "stderr.log").read_text()[-2000:])
    assert (run_dir / "best.pt").exists()
    assert "epoch 1/1" in (run_dir / "stdout.log").read_text()
    # A second launch into the same folder is refused.
    _by_label(at.text_input, "Run name").set_value("tiny-app")
    _by_label(at.button, "Launch training").click()
    at.run()
    assert any("already exists" in e.value for e in at.error)
    # A completed run can be given more epochs (core.train --resume --epochs N), never fewer than it has.
    at.run()
    more = _by_label(at.number_input, "Epochs in total")
    assert more.value == 2 and more.min == 2
    _by_label(at.button, "Train more epochs").click()
    at.run()
    assert not at.exception, at.exception
    assert any(m.value == "tiny-app goes on with epoch 2 (it had 1)." for m in at.success), \
        [m.value for m in at.success]  # a step schedule: nothing to re-anneal
    deadline = time.time() + 120
    while time.time() < deadline and (is_locked(str(run_dir)) or run_status(str(run_dir))["epochs_done"] < 2):
        time.sleep(0.5)
    assert run_status(str(run_dir))["state"] == "completed" and run_status(str(run_dir))["epochs_done"] == 2
    assert "resuming" in (run_dir / "stdout.log").read_text()


def _log_events(run_dir, *events, epochs=3):
    """A run folder as training leaves it: its config.json and these events in its log.jsonl."""
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"epochs": epochs}))
    (run_dir / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def test_train_page_shows_a_failed_runs_error(app_dirs):
    runs, _ = app_dirs
    _log_events(runs / "crashed", {"event": "start", "time": 1, "epochs": 3},
                {"event": "error", "time": 2, "message": "non-finite loss at epoch 2, step 5"})
    at = _app("pages/train.py")
    assert any("non-finite loss at epoch 2" in e.value for e in at.error)


def test_train_page_shows_a_refused_resume_without_failing_the_run(app_dirs):
    runs, _ = app_dirs
    _log_events(runs / "done", {"event": "start", "time": 1, "epochs": 1},
                {"event": "end", "time": 2, "status": "completed"},
                {"event": "refused", "time": 3, "message": "train.json, image 3, annotation 4: unknown category_id 0"},
                epochs=1)
    at = _app("pages/train.py")
    assert not at.error, [e.value for e in at.error]
    assert any("resume this run was refused: train.json, image 3" in w.value for w in at.warning)
    assert any("completed" in m.value for m in at.markdown)


def test_train_page_shows_what_a_command_line_run_logged(app_dirs):
    runs, _ = app_dirs
    _log_events(runs / "cli", {"event": "start", "time": 1, "epochs": 1, "arch": "digitnet_fpn", "device": "cpu"},
                {"event": "epoch", "time": 2, "epoch": 1, "loss": 0.5, "mAP": 0.25},
                {"event": "end", "time": 3, "status": "completed"}, epochs=1)
    at = _app("pages/train.py")
    shown = "\n".join(c.value for c in at.code)
    assert "started from the command line" in shown and "epoch 1: loss 0.5000, mAP 0.2500" in shown
    assert "(no output yet)" not in shown


def test_a_failed_launch_that_saved_nothing_can_be_deleted_and_a_trained_run_cannot(app_dirs, tiny_run):
    runs, _ = app_dirs
    _log_events(runs / "typo", {"event": "error", "time": 2, "message": "no such data"})
    shutil.copytree(tiny_run, runs / "trained")
    os.utime(runs / "typo")  # the newest: the page opens on it
    at = _app("pages/train.py")
    assert at.selectbox[0].value == "typo"
    _by_label(at.button, "Delete").click()
    at.run()
    assert not at.exception, at.exception
    assert not (runs / "typo").exists() and any("Deleted typo" in m.value for m in at.success)
    assert at.selectbox[0].value == "trained"
    assert not [b for b in at.button if b.label == "Delete"], "a run that saved epochs offers no delete"
    with pytest.raises(LaunchError, match="holds best.pt, last.pt, history.json"):
        remove_failed_run("trained", str(runs))


def test_a_run_stopped_before_its_first_epoch_can_be_deleted_and_a_resume_can_change_the_data(app_dirs, tiny_run):
    runs, _ = app_dirs
    _log_events(runs / "early", {"event": "start", "time": 1, "epochs": 3},
                {"event": "end", "time": 2, "status": "stopped", "message": "stopped on request (SIGINT)"})
    at = _app("pages/train.py")
    assert at.selectbox[0].value == "early" and [b for b in at.button if b.label == "Delete"]
    assert not [b for b in at.button if b.label in ("Resume this run", "Train more epochs")], "nothing to resume"
    shutil.copytree(tiny_run, runs / "done")
    os.utime(runs / "done")  # the newest: the page opens on it
    at = _app("pages/train.py")
    assert at.selectbox[0].value == "done"
    data = _by_label(at.text_input, "Data to go on with")
    assert os.path.samefile(data.value, json.load(open(runs / "done" / "config.json"))["data"]), "the run's own data"


def test_train_page_ignores_folders_it_cannot_drive(app_dirs):
    runs, _ = app_dirs
    (runs / "my run").mkdir()
    (runs / "my run" / "history.json").write_text("[]")
    (runs / ".ipynb_checkpoints").mkdir()
    at = _app("pages/train.py")
    assert not at.exception


def test_train_page_shows_a_run_with_unreadable_files_without_crashing(app_dirs):
    runs, _ = app_dirs
    (runs / "broken").mkdir()
    (runs / "broken" / "history.json").write_text("{oops")
    (runs / "broken" / "config.json").write_text("[1, 2]")
    at = _app("pages/train.py")
    assert not at.exception, at.exception
    assert any("broken" in w.value and "cannot be read" in w.value for w in at.warning)


def test_data_page_summarises_a_dataset_and_filters_its_images(app_dirs, tiny_data, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data / "tiny")
    (data / "tiny" / "valid.json").write_text("{broken")
    monkeypatch.setenv("DIGIT_STUDIO_DATA", str(data))
    at = _app("pages/data.py")
    assert at.selectbox[0].value.endswith("tiny")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"train": "16 images", "test": "8 images"}
    assert "valid.json" in at.error[0].value and "malformed JSON" in at.error[0].value
    assert "16 image(s)" in at.markdown[-1].value
    _by_label(at.selectbox, "Holding digit").set_value(7).run()
    with_seven = sum("7" in r.number for r in load_split(str(data / "tiny"), "train").records)
    assert f"{with_seven} image(s)" in at.markdown[-1].value


def test_data_page_names_a_missing_and_a_corrupt_image_file(app_dirs, tiny_data, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data / "tiny")
    train = json.loads((data / "tiny" / "train.json").read_text())
    gone, cut = train["images"][1], train["images"][4]
    os.remove(data / "tiny" / "train" / gone["file_name"])
    path = data / "tiny" / "train" / cut["file_name"]
    path.write_bytes(path.read_bytes()[:200])
    monkeypatch.setenv("DIGIT_STUDIO_DATA", str(data))
    at = _app("pages/data.py")
    assert not at.exception, at.exception
    warning = next(w.value for w in at.warning if "Split **train**" in w.value)
    assert "2 problem(s) in 2 image(s)" in warning and "--skip-invalid" in warning
    assert f"image {gone['id']}: image file missing" in warning and f"image {cut['id']}: unreadable image" in warning
    assert sum("every image file reads" in c.value for c in at.caption) == 2, "valid and test are clean"
    valid = json.loads((data / "tiny" / "valid.json").read_text())
    bad = valid["annotations"][0]
    bad["category_id"] = 0
    (data / "tiny" / "valid.json").write_text(json.dumps(valid))
    at = _app("pages/data.py")
    assert not at.error, "a box that is no digit does not stop the split from being looked at"
    warning = next(w.value for w in at.warning if "Split **valid**" in w.value)
    assert f"image {bad['image_id']}, annotation {bad['id']}: unknown category_id 0" in warning
    assert {m.label: m.value for m in at.metric}["valid"] == f"{len(valid['images'])} images"


def test_data_page_opens_on_a_split_with_images_and_names_an_empty_one(app_dirs, tiny_data, tmp_path, monkeypatch):
    """A synthetic test set is generated with --train 0 --valid 0: the page must not open on (or crash on) train."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data / "tiny")
    for split in ("train", "valid"):
        coco = json.loads((data / "tiny" / f"{split}.json").read_text())
        (data / "tiny" / f"{split}.json").write_text(json.dumps({**coco, "images": [], "annotations": []}))
    monkeypatch.setenv("DIGIT_STUDIO_DATA", str(data))
    at = _app("pages/data.py")
    assert at.radio[0].value == "test"
    assert "8 image(s)" in at.markdown[-1].value
    at.radio[0].set_value("train").run()
    assert not at.exception, at.exception
    assert "has no images" in at.info[0].value


def test_data_page_enlarges_a_small_number_in_its_close_up(app_dirs, tmp_path, monkeypatch):
    """An SVHN-style crop centred on a large white canvas: the grid zooms to it, the close-up adds it enlarged."""
    from pages import boxed_picture, focus, number_picture
    folder = tmp_path / "data" / "padded"
    (folder / "test").mkdir(parents=True)
    canvas = Image.new("RGB", (226, 208), "white")
    canvas.paste(Image.new("RGB", (14, 22), (90, 90, 90)), (106, 93))
    canvas.save(folder / "test" / "1.png")
    (folder / "test.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.png", "width": 226, "height": 208}],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [106, 93, 14, 22], "category_id": 8, "area": 308,
                         "iscrowd": 0}],
        "categories": [{"id": d + 1, "name": str(d)} for d in range(10)]}))
    monkeypatch.setenv("DIGIT_STUDIO_DATA", str(tmp_path / "data"))
    at = _app("pages/data.py")
    assert not at.exception, at.exception
    assert len(at.get("image")) == 3, "the grid's picture, the close-up and the number enlarged"
    assert any("enlarged" in c.value for c in at.caption)
    grid = at.get("image")[0].proto.imgs[0].url
    at.toggle(key="zoom").set_value(False).run()
    assert at.get("image")[0].proto.imgs[0].url != grid, "the toggle draws the grid's picture whole"
    assert number_picture(canvas, [(106, 93, 120, 115, 7)], [], 220, zoom=True).size == (194, 220), \
        "zoomed: the number and its height around it (59x67 px) at the thumbnail's side"
    assert number_picture(canvas, [(106, 93, 120, 115, 7)], [], 220, zoom=False).size == (220, 202)
    assert focus((226, 208), [(106, 93, 120, 115, 7)]) == (84, 71, 143, 138), "the box with its height around it"
    assert focus((800, 600), [(300, 300, 340, 320, 1), (340, 300, 380, 320, 2)]) == (280, 280, 401, 341)
    assert focus((226, 208), [(20, 10, 200, 190, 7)]) is None, "a number that fills the image is shown whole"
    # At 900 px a 14 px digit is 56 px wide: its box line stays thin (the picture's own line would be 8 px).
    picture = boxed_picture(canvas, [(106, 93, 120, 115, 7)], 900)
    k = 900 / 226
    inside = (round(106 * k) + 6, round(100 * k))
    assert picture.getpixel(inside) == (90, 90, 90), "a few pixels inside the box, the digit still shows"


def test_data_page_counts_and_draws_letter_boxes_of_a_letter_dataset(app_dirs, fonts, tmp_path, monkeypatch):
    from core import synth
    from pages import LETTER_COLOUR, LETTER_LABEL, boxed_picture
    data = tmp_path / "data"
    synth.generate_dataset(data / "letters", {"train": 12}, seed=2, fonts=fonts, letter_boxes=True,
                           negatives=synth.Negatives(words_alone=0.3, letters_beside=0.8))
    letters = sum(a["category_id"] == 11 for a in json.loads((data / "letters" / "train.json").read_text())["annotations"])
    monkeypatch.setenv("DIGIT_STUDIO_DATA", str(data))
    at = _app("pages/data.py")
    assert f"{letters:,} letters (grey boxes)" in at.caption[1].value
    grey = tuple(int(LETTER_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
    picture = boxed_picture(Image.new("RGB", (40, 40), "white"), [(5, 5, 30, 30, LETTER_LABEL)], 40)
    assert picture.getpixel((5, 15)) == grey, "a letter box is drawn grey, in no digit's colour"


def test_data_page_without_datasets_says_where_they_come_from(app_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGIT_STUDIO_DATA", str(tmp_path / "none"))
    at = _app("pages/data.py")
    assert "core.convert" in at.info[0].value


def _evaluate_page(runs, tiny_run, tiny_data, tmp_path, monkeypatch):
    _install_tiny(runs, tiny_run)
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data / "tiny")
    monkeypatch.setenv("DIGIT_STUDIO_DATA", str(data))
    return _app("pages/evaluate.py"), data / "tiny"


def _finish(at, timeout=120):
    """The page's fragment does not run under AppTest: wait for the evaluation thread, then rerun."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        at.run()
        if at.metric or at.error:
            return at
        time.sleep(0.5)
    raise AssertionError("the evaluation did not finish")


def test_evaluate_page_offers_to_skip_broken_images_and_lists_them(app_dirs, tiny_run, tiny_data, tmp_path,
                                                                    monkeypatch):
    runs, _ = app_dirs
    at, folder = _evaluate_page(runs, tiny_run, tiny_data, tmp_path, monkeypatch)
    broken, turned = sorted(os.listdir(folder / "valid"))[:2]
    (folder / "valid" / broken).write_text("not a picture")
    tag_rotated(folder / "valid" / turned)
    at = _app("pages/evaluate.py")
    at.button[0].click().run()
    _finish(at)
    assert not at.metric and len(at.error) == 1 and broken in at.error[0].value
    assert "turn on **Skip images with problems** in the sidebar" in at.error[0].value
    _by_label(at.toggle, "Skip images with problems").set_value(True).run()
    next(b for b in at.button if b.label == "Evaluate").click().run()
    _finish(at)
    assert [m.label for m in at.metric][:4] == ["mAP@[.5:.95]", "AP50", "AP75", "Task 2"]
    assert any(c.value.startswith("7 images") for c in at.caption), "the other seven are scored"
    skipped = [w.value for w in at.warning if "skipped, not scored" in w.value]
    assert len(skipped) == 1 and broken in skipped[0] and skipped[0].startswith("1 image(s) with problems")
    noted = [i.value for i in at.info if "worth a look" in i.value]
    assert len(noted) == 1 and f"{turned} is stored rotated (EXIF orientation 6)" in noted[0], "scored, and said"


def test_evaluate_page_shows_the_report_and_filters_the_failure_gallery(app_dirs, tiny_run, tiny_data, tmp_path,
                                                                      monkeypatch):
    runs, _ = app_dirs
    at, folder = _evaluate_page(runs, tiny_run, tiny_data, tmp_path, monkeypatch)
    assert at.radio[0].value == "valid"
    at.button[0].click().run()
    _finish(at)
    labels = [m.label for m in at.metric]
    assert labels == ["mAP@[.5:.95]", "AP50", "AP75", "Task 2", "ms per image"]
    loaded = load_model(os.path.join(tiny_run, "best.pt"))
    records = load_split(str(folder), "valid").records
    wrong = sum(read_number(d, loaded.reader) != r.number
                for r, d in zip(records, predict_mod.detect(loaded, [decode_image(r.path) for r in records])))
    assert [t.label for t in at.tabs] == ["Per class", "Precision-recall", "Confusion", "Task 2", "Failures", "Files"]
    assert wrong, "a one-epoch tiny model reads some numbers wrong"
    caption = next(c.value for c in at.caption if "wrong images" in c.value)
    assert f"{wrong} of {wrong} wrong images" in caption
    # The confusion matrix: every digit, "missed" and "extra" on category axes (plotly reads "0".."9" as numbers).
    confusion = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                     if json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "").startswith("Confusion"))
    assert confusion["data"][0]["x"] == [str(d) for d in range(10)] + ["missed"]
    assert confusion["data"][0]["y"] == [str(d) for d in range(10)] + ["extra"]
    assert confusion["layout"]["xaxis"]["type"] == confusion["layout"]["yaxis"]["type"] == "category"
    _by_label(at.multiselect, "Error kinds").set_value([]).run()
    assert any(f"0 of {wrong} wrong images" in c.value for c in at.caption)
    assert any(b.label == "Download all (zip)" for b in at.get("download_button"))
    # Coming back is instant: the finished job is the cache, no button needed.
    again = _app("pages/evaluate.py")
    assert [m.label for m in again.metric][:1] == ["mAP@[.5:.95]"]
    assert not [b for b in again.button if b.label == "Evaluate"]
    assert any(c.value.startswith("Evaluated at ") and "and kept" in c.value for c in again.caption), \
        "says why there is no Evaluate button"


def test_evaluate_page_names_a_checkpoint_that_cannot_be_loaded_and_an_empty_split(app_dirs, tiny_run, tiny_data,
                                                                                   tmp_path, monkeypatch):
    runs, _ = app_dirs
    from core.checkpoint import FORMAT

    (runs / "broken").mkdir()
    (runs / "broken" / "best.pt").write_bytes(b"not a checkpoint")
    (runs / "cut").mkdir()
    torch.save({"format": FORMAT, "arch": "digitnet_fpn"}, runs / "cut" / "best.pt")  # a checkpoint, half written
    at, folder = _evaluate_page(runs, tiny_run, tiny_data, tmp_path, monkeypatch)
    offered = _by_label(at.selectbox, "Checkpoint").options
    assert str(runs / "cut" / "best.pt") in offered and str(runs / "broken" / "best.pt") not in offered, \
        "a file that is no checkpoint is not offered"
    _by_label(at.selectbox, "Checkpoint").set_value(str(runs / "cut" / "best.pt")).run()
    at.button[0].click().run()
    _finish(at)
    assert "evaluation failed" in at.error[0].value and "checkpoint is missing model_kwargs" in at.error[0].value
    coco = json.loads((folder / "test.json").read_text())
    (folder / "test.json").write_text(json.dumps({**coco, "images": [], "annotations": []}))
    _by_label(at.selectbox, "Checkpoint").set_value(str(runs / "tiny" / "best.pt")).run()
    at.radio[0].set_value("test").run()
    at.button[0].click().run()
    _finish(at)
    assert "the split has no images" in at.error[0].value
    assert not at.exception


def test_evaluate_page_compares_two_checkpoints_and_names_a_folder_without_annotations(
        app_dirs, tiny_run, tiny_data, tmp_path, monkeypatch):
    runs, _ = app_dirs
    (runs / "other").mkdir()
    shutil.copy(os.path.join(tiny_run, "best.pt"), runs / "other" / "best.pt")
    at, folder = _evaluate_page(runs, tiny_run, tiny_data, tmp_path, monkeypatch)
    _by_label(at.selectbox, "Compare with").set_value(str(runs / "other" / "best.pt")).run()
    at.button[0].click().run()
    deadline = time.time() + 120
    while time.time() < deadline and len([c for c in at.get("plotly_chart")]) < 2:
        time.sleep(0.5)
        at.run()
    deltas = {m.label: m.delta for m in at.metric if m.delta}
    values = {m.label: m.value for m in at.metric}
    assert {k: d for k, d in deltas.items() if k != "ms per image"} == {
        k: f"±0.000 vs {values[k]}" for k in ("mAP@[.5:.95]", "AP50", "AP75", "Task 2")}, \
        "the same weights: no difference, and the other's own figure"
    from streamlit.proto.Metric_pb2 import Metric as MetricProto

    same = [m for m in at.metric if m.label != "ms per image"]
    assert {m.color for m in same} == {MetricProto.MetricColor.GRAY}, "no difference is grey"
    assert {m.proto.direction for m in same} == {MetricProto.MetricDirection.NONE}, "and has no arrow"
    assert f"difference from {checkpoint_label(str(runs / 'other' / 'best.pt'))}, and its figure" in \
        " ".join(c.value for c in at.caption), "the other checkpoint is named once, in full"
    assert " vs " in deltas["ms per image"], "the other's speed too"
    titles = [json.loads(c.proto.spec)["layout"].get("title", {}).get("text") for c in at.get("plotly_chart")]
    assert "This checkpoint" in titles and "runs/other/best.pt" in " ".join(t or "" for t in titles)
    zips = [b.label for b in at.get("download_button") if "(zip)" in b.label]
    other_label = checkpoint_label(str(runs / "other" / "best.pt"))
    this_label = checkpoint_label(_by_label(at.selectbox, "Checkpoint").value)
    assert zips == [f"Download all of {this_label} (zip)", f"Download all of {other_label} (zip)"], \
        "each checkpoint's report downloads, named"
    assert [file_stem(label) for label in ("runs/other/best.pt", "default.pt (shipped)", "/tmp/a b/x.pt", "..")] == \
        ["runs-other-best", "default", "tmp-a-b-x", "checkpoint"], "the compared report's zip is named after it"
    (tmp_path / "data" / "images-only" / "valid").mkdir(parents=True)
    at = _app("pages/evaluate.py")
    _by_label(at.selectbox, "Labelled folder").set_value(str(tmp_path / "data" / "images-only")).run()
    assert "holds no split" in at.error[0].value


def test_evaluate_page_names_the_reader_of_a_compared_checkpoint_that_reads_otherwise(
        app_dirs, tiny_run, tiny_data, tmp_path, monkeypatch):
    runs, _ = app_dirs
    (runs / "strict").mkdir()
    payload = torch.load(os.path.join(tiny_run, "best.pt"), weights_only=True)
    payload["task2_reader"] = NumberReader(0.9, 0.9).as_dict()
    torch.save(payload, runs / "strict" / "best.pt")
    at, _ = _evaluate_page(runs, tiny_run, tiny_data, tmp_path, monkeypatch)
    _by_label(at.selectbox, "Compare with").set_value(str(runs / "strict" / "best.pt")).run()
    at.button[0].click().run()
    deadline = time.time() + 120
    while time.time() < deadline and len(at.get("plotly_chart")) < 2:
        time.sleep(0.5)
        at.run()
    said = [c.value for c in at.caption if "reads numbers otherwise" in c.value]
    assert said == [f"{checkpoint_label(str(runs / 'strict' / 'best.pt'))} reads numbers otherwise · Task 2: "
                    f"{NumberReader(0.9, 0.9).describe()}"], "the compared figures' reader is named"


def test_failure_gallery_enlarges_a_number_that_is_small_in_its_image(app_dirs, tiny_run, tiny_data, tmp_path,
                                                                       monkeypatch):
    from PIL import Image as PILImage

    runs, _ = app_dirs
    # The same number twice: as a crop it fills (id 1), and pasted small into a photo 5x its size (id 2).
    def fills(r):
        return r.boxes and max(b[2] for b in r.boxes) - min(b[0] for b in r.boxes) > 0.5 * max(r.width, r.height)

    record = next(r for split in ("valid", "train") for r in load_split(tiny_data, split).records if fills(r))
    crop = PILImage.open(record.path).convert("RGB")
    side = 5 * max(crop.size)
    canvas = PILImage.new("RGB", (side, side), (128, 128, 128))
    canvas.paste(crop, (2 * crop.width, 2 * crop.height))
    pasted = tmp_path / "data" / "pasted"
    (pasted / "valid").mkdir(parents=True)
    crop.save(pasted / "valid" / "1.png")
    canvas.save(pasted / "valid" / "2.png")
    annotations = []
    for image_id, (dx, dy) in ((1, (0, 0)), (2, (2 * crop.width, 2 * crop.height))):
        for (x0, y0, x1, y1), label in zip(record.boxes, record.labels):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label, "iscrowd": 0,
                                "bbox": [x0 + dx, y0 + dy, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    categories = json.loads(open(os.path.join(tiny_data, "valid.json")).read())["categories"]
    (pasted / "valid.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.png", "width": crop.width, "height": crop.height},
                   {"id": 2, "file_name": "2.png", "width": side, "height": side}],
        "annotations": annotations, "categories": categories}))
    at, _ = _evaluate_page(runs, tiny_run, tiny_data, tmp_path, monkeypatch)
    _by_label(at.selectbox, "Labelled folder").set_value(str(pasted)).run()
    at.button[0].click().run()
    _finish(at)
    assert not at.exception, at.exception
    captions = [caption for element in at.get("image") for caption in element.captions]
    first = next(c for c in captions if c.startswith("#1 "))
    second = next(c for c in captions if c.startswith("#2 "))
    assert "enlarged" not in first and "enlarged around the number" in second, captions


def test_paths_outside_the_project_are_shown_whole():
    from pages import shown_path
    assert shown_path(os.path.join(ROOT, "runs", "a", "best.pt")) == os.path.join("runs", "a", "best.pt")
    sibling = ROOT.rstrip(os.sep) + "-data"  # shares the project's name as a prefix
    assert shown_path(os.path.join(sibling, "letters")) == os.path.join(sibling, "letters")


def test_labels_of_a_number_too_small_on_screen_do_not_pile_up():
    from pages import number_labels

    boxes, digits, scores = [[10, 20, 40, 60], [42, 21, 72, 60]], [2, 5], [0.99, 0.91]
    assert number_labels(boxes, digits, scores, 2.0) == [(10, 20, "<b>2</b> 0.99"), (42, 21, "<b>5</b> 0.91")]
    assert number_labels(boxes, digits, scores, 1.0) == [(10, 20, "<b>2</b>"), (42, 21, "<b>5</b>")]
    assert number_labels(boxes, digits, scores, 0.3) == [(10, 20, "<b>25</b>")], "9 px wide: one label, the number"
    assert number_labels([], [], [], 1.0) == []
    assert number_labels(boxes[:1], [2], [0.795], 2.0) == [(10, 20, "<b>2</b> 0.79")], "never shown above its score"


def test_the_frame_round_the_number_read_stays_inside_the_picture():
    from pages.detect import framed

    assert framed([100, 50, 200, 90], (400, 300)) == pytest.approx((88, 38, 212, 102)), "0.3 of its height clear"
    assert framed([100, 3, 689, 291], (741, 350)) == pytest.approx((13.6, 0, 741, 350)), "clipped to the image"
