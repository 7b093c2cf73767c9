"""Every kind of bad or unusual image through both user-facing paths: core.predict and the app."""

import csv
import io
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import ROOT
from core.predict import main as predict_main


def _encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _bomb():
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def _picture():
    array = np.full((40, 90, 3), 230, np.uint8)
    array[8:32, 10:20] = 20
    array[8:32, 40:50] = 20
    return Image.fromarray(array)


def _exif_rotated():
    exif = Image.Exif()
    exif[0x0112] = 8
    return _encode(_picture(), "JPEG", exif=exif.tobytes())


BAD = {  # file name -> bytes; each must be reported by name, the rest still processed
    "1.png": b"",
    "2.png": os.urandom(3000),
    "3.png": _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), np.uint8)), "PNG")[:4000],
    "4.jpg": _encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 90, 3), np.uint8)), "JPEG")[:3000],
    "5.png": b"this is a text file with a png name\n",
    "6.png": _bomb(),
}
GOOD = {
    "11.gif": _encode(_picture().convert("P"), "GIF", save_all=True, append_images=[Image.new("P", (90, 40))]),
    "12.webp": _encode(_picture(), "WEBP", save_all=True, append_images=[Image.new("RGB", (90, 40))]),
    "13.jpg": _encode(_picture().convert("CMYK"), "JPEG"),
    "14.png": _encode(Image.fromarray((np.asarray(_picture().convert("L"), np.uint16) * 257)), "PNG"),
    "15.png": _encode(_picture().convert("P"), "PNG"),
    "16.png": _encode(_picture().convert("RGBA"), "PNG"),
    "17.png": _encode(_picture().convert("L"), "PNG"),
    "18.jpg": _exif_rotated(),
    "19.png": _encode(Image.new("RGB", (1, 1), "white"), "PNG"),
    "20.png": _encode(Image.new("RGB", (5000, 5000), (200, 200, 200)), "PNG", compress_level=1),
    "21.bmp": _encode(_picture(), "BMP"),
}


def test_core_predict_reports_each_bad_file_and_predicts_the_rest(tiny_run, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, data in {**BAD, **GOOD}.items():
        (folder / name).write_bytes(data)
    out = tmp_path / "out"
    code = predict_main(["--ckpt", f"{tiny_run}/best.pt", "--images", str(folder), "--out", str(out),
                         "--device", "cpu"])
    assert code == 1, "some files were unreadable"
    err = capsys.readouterr().err
    for name in BAD:
        assert f"skipped {name}:" in err, name
    for name in GOOD:
        assert name not in err, name
    rows = list(csv.reader(open(out / "pred.csv")))[1:]
    ids = [int(r[0]) for r in rows]
    assert ids == sorted(int(n.split(".")[0]) for n in {**BAD, **GOOD})
    assert all(r[1] == "-1" for r in rows if f"{r[0]}.png" in BAD or f"{r[0]}.jpg" in BAD)


def test_app_names_each_bad_upload_and_keeps_serving(tiny_run, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    (runs / "tiny").mkdir(parents=True)
    shutil.copy(f"{tiny_run}/best.pt", runs / "tiny" / "best.pt")
    monkeypatch.setenv("DIGIT_STUDIO_RUNS", str(runs))
    monkeypatch.setenv("DIGIT_STUDIO_CHECKPOINTS", str(tmp_path / "none"))
    at = AppTest.from_file(os.path.join(ROOT, "streamlit_app.py"), default_timeout=180)
    at.run()
    uploads = [(name, data, "application/octet-stream") for name, data in {**BAD, **GOOD}.items()
               if name != "20.png"]  # the 5000 px image goes through core.predict above; AppTest is slow with it
    at.file_uploader[0].set_value(uploads)
    at.run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    for name in BAD:
        assert name in errors, name
    assert len(at.metric) == len(GOOD) - 1, "every readable image has its result"
    table = at.dataframe[0].value
    assert (table["status"] == "ok").sum() == len(GOOD) - 1
    # The app still serves: a fresh good upload works.
    at.file_uploader[0].set_value(("30.png", GOOD["21.bmp"], "image/bmp"))
    at.run()
    assert not at.exception and len(at.metric) == 1
