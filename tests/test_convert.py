import csv
import json
import os

import h5py
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps
from pycocotools.coco import COCO

from core import convert
from core.data import load_split
from core.images import decode_image

ORIENTATION = ExifTags.Base.Orientation
# What a camera did to store a picture that viewers turn back with each EXIF orientation.
STORED_AS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_270}


def _png(path, size, colour=(90, 120, 200)):
    Image.new("RGB", size, colour).save(path)


def _red_box(picture):
    """``[x0, y0, x1, y1]`` around the red pixels: where the digit of ``_photo`` is in these pixels."""
    rgb = np.asarray(picture.convert("RGB")).astype(int)
    ys, xs = np.nonzero((rgb[..., 0] > 150) & (rgb[..., 1] < 100) & (rgb[..., 2] < 100))
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _photo(path, shown_size, digit, orientation, kind="JPEG"):
    """A grey picture with a red "digit" at ``digit`` (x0, y0, x1, y1) as viewers show it, stored turned as
    EXIF ``orientation`` says: a phone photo."""
    picture = Image.new("RGB", shown_size, (200, 200, 200))
    picture.paste((220, 20, 20), digit)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    stored = picture.transpose(STORED_AS[orientation]) if orientation != 1 else picture
    stored.save(path, kind, quality=95, exif=exif.tobytes())
    with Image.open(path) as written:
        assert _red_box(ImageOps.exif_transpose(written)) == pytest.approx(list(digit), abs=1), "viewers see it"


@pytest.fixture
def svhn_src(tmp_path):
    """SVHN format 1 in miniature: a two-digit image (fields as references), a one-digit image
    (fields as scalars) with label 10 (digit 0) running past the edge, and a box wholly outside."""
    src = tmp_path / "svhn"
    src.mkdir()
    _png(src / "1.png", (60, 40))
    _png(src / "2.png", (30, 30), (200, 10, 10))
    _png(src / "3.png", (50, 20))
    convert.write_svhn_mat(str(src / "digitStruct.mat"), [
        ("1.png", [(1, 10, 5, 12, 20), (9, 24, 6, 12, 20)]),
        ("2.png", [(10, 20, 4, 15, 22)]),  # runs 5 px past the right edge
        ("3.png", [(3, 5, 2, 10, 15), (4, 70, 2, 10, 15)]),  # the second lies outside the 50 px image
    ])
    return src


def test_svhn_both_field_layouts_round_trip_into_load_split_and_pycocotools(svhn_src, tmp_path):
    out = tmp_path / "data"
    report = convert.convert("svhn", str(svhn_src), str(out), progress_stream=None)
    assert report.images == {"train": 3} and report.digits == {"train": 4}
    assert len(report.empty_boxes) == 1
    assert "record 3 (3.png): box 2 (digit 4) has no area inside the 50x20 image" in str(report.empty_boxes[0])

    split = load_split(str(out), "train")
    by_id = {r.image_id: r for r in split.records}
    assert by_id[1].number == "19" and by_id[2].number == "0" and by_id[3].number == "3"
    assert by_id[1].boxes[0] == [10.0, 5.0, 22.0, 25.0]
    assert by_id[2].boxes[0] == [20.0, 4.0, 30.0, 26.0], "clipped at the image's right edge"
    coco = COCO(str(out / "train.json"))
    assert sorted(coco.getImgIds()) == [1, 2, 3] and len(coco.getAnnIds()) == 4
    for name in ("1.png", "2.png", "3.png"):
        assert (out / "train" / name).read_bytes() == (svhn_src / name).read_bytes(), "copied, not re-encoded"
    with open(out / "train.sources.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["image_id"] for r in rows] == ["1", "2", "3"] and rows[0]["source"].endswith("1.png")


def test_valid_fraction_is_reproducible_and_partitions_the_images(tmp_path):
    src = tmp_path / "svhn"
    src.mkdir()
    entries = []
    for i in range(1, 21):
        _png(src / f"{i}.png", (20, 20))
        entries.append((f"{i}.png", [(i % 10 + 1, 2, 2, 8, 12)]))
    convert.write_svhn_mat(str(src / "digitStruct.mat"), entries)

    def ids(out, split):
        return {img["id"] for img in json.loads((out / f"{split}.json").read_text())["images"]}

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    convert.convert("svhn", str(src), str(a), valid_fraction=0.25, seed=3, progress_stream=None)
    convert.convert("svhn", str(src), str(b), valid_fraction=0.25, seed=3, progress_stream=None)
    convert.convert("svhn", str(src), str(c), valid_fraction=0.25, seed=4, progress_stream=None)
    assert len(ids(a, "valid")) == 5 and ids(a, "train") | ids(a, "valid") == set(range(1, 21))
    assert not ids(a, "train") & ids(a, "valid")
    assert ids(a, "valid") == ids(b, "valid") and ids(a, "valid") != ids(c, "valid")


def test_a_second_run_is_refused_unless_forced_and_force_replaces_the_split(svhn_src, tmp_path):
    out = tmp_path / "data"
    convert.convert("svhn", str(svhn_src), str(out), progress_stream=None)
    with pytest.raises(convert.ConvertError, match="--force"):
        convert.convert("svhn", str(svhn_src), str(out), progress_stream=None)
    convert.convert("svhn", str(svhn_src), str(out), split="test", progress_stream=None)  # another split is fine
    (out / "train" / "stale.png").write_bytes(b"x")
    convert.convert("svhn", str(svhn_src), str(out), force=True, progress_stream=None)
    assert sorted(os.listdir(out / "train")) == ["1.png", "2.png", "3.png"]
    assert sorted(os.listdir(out)) == ["test", "test.json", "test.sources.csv", "train", "train.json",
                                       "train.sources.csv"]


def test_out_must_be_a_folder_of_its_own(svhn_src, tmp_path):
    (tmp_path / "afile").write_text("x")
    for out, said in ((tmp_path / "afile", "exists and is not a folder"), (tmp_path / "afile" / "sub", "is a file"),
                      (svhn_src, "--out is the --src folder")):
        with pytest.raises(convert.ConvertError, match=said):
            convert.convert("svhn", str(svhn_src), str(out), progress_stream=None)
    assert (tmp_path / "afile").read_text() == "x" and not (svhn_src / "train.json").exists()


def test_an_interrupted_run_leaves_no_split_that_looks_complete(svhn_src, tmp_path, monkeypatch):
    out = tmp_path / "data"
    convert.convert("svhn", str(svhn_src), str(out), progress_stream=None)
    before = (out / "train.json").read_bytes()
    placed = []

    def crash_on_second(source, target, link):
        placed.append(target)
        assert not any(n.startswith("test") for n in os.listdir(out)), "nothing of the new split is visible"
        if len(placed) == 2:
            raise KeyboardInterrupt
        convert.shutil.copyfile(source, target)

    monkeypatch.setattr(convert, "_place_image", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        convert.convert("svhn", str(svhn_src), str(out), split="test", progress_stream=None)
    assert sorted(os.listdir(out)) == ["train", "train.json", "train.sources.csv"], "no partial folder left"
    assert (out / "train.json").read_bytes() == before, "the split already there is untouched"
    # A run killed outright leaves only a hidden folder, which the next CLI run clears.
    (out / (convert.PARTIAL_PREFIX + "x")).mkdir()
    assert convert.main(["svhn", "--src", str(svhn_src), "--out", str(out), "--split", "test"]) == 0
    assert not [n for n in os.listdir(out) if n.startswith(".")]


def test_problems_name_the_file_and_record_and_skip_invalid_converts_the_rest(tmp_path, capsys):
    src = tmp_path / "svhn"
    src.mkdir()
    _png(src / "1.png", (30, 30))
    _png(src / "3.png", (30, 30))
    convert.write_svhn_mat(str(src / "digitStruct.mat"), [
        ("1.png", [(1, 2, 2, 8, 12)]), ("2.png", [(2, 2, 2, 8, 12)]), ("3.png", [(11, 2, 2, 8, 12)])])
    out = tmp_path / "data"
    with pytest.raises(convert.ConvertError) as raised:
        convert.convert("svhn", str(src), str(out), progress_stream=None)
    message = str(raised.value)
    assert "record 2 (2.png): image 2.png is missing" in message
    assert "record 3 (3.png): label 11 is outside 1..10" in message
    assert not (out / "train.json").exists()
    assert convert.main(["svhn", "--src", str(src), "--out", str(out), "--skip-invalid"]) == 0
    assert f"dropped 2 invalid records (all of them listed in {out / 'train.dropped.txt'}):" in capsys.readouterr().out
    assert [r.image_id for r in load_split(str(out), "train").records] == [1]


def test_skip_invalid_lists_every_dropped_record_in_a_file_written_with_its_split(tmp_path, capsys):
    src = tmp_path / "svhn"
    src.mkdir()
    _png(src / "1.png", (30, 30))
    convert.write_svhn_mat(str(src / "digitStruct.mat"), [(f"{i}.png", [(1, 2, 2, 8, 12)]) for i in range(1, 31)])
    out = tmp_path / "data"
    assert convert.main(["svhn", "--src", str(src), "--out", str(out), "--skip-invalid"]) == 0
    printed = capsys.readouterr().out.splitlines()
    listed = (out / "train.dropped.txt").read_text().splitlines()
    assert len(listed) == 29 and all(any(f"record {i} ({i}.png)" in line for line in listed) for i in range(2, 31))
    start = printed.index(f"dropped 29 invalid records (all of them listed in {out / 'train.dropped.txt'}):")
    shown = [line.strip() for line in printed[start + 1:start + 27]]
    assert shown == listed[:25] + ["... and 4 more"], "the summary shows the first of the same lines"

    assert convert.main(["svhn", "--src", str(src), "--out", str(out), "--skip-invalid", "--force",
                         "--valid-fraction", "0.5"]) == 0
    both = (out / "train.dropped.txt").read_text().splitlines() + (out / "valid.dropped.txt").read_text().splitlines()
    assert sorted(both) == sorted(listed), "each split lists the records it would have held"
    for i in range(2, 31):
        _png(src / f"{i}.png", (30, 30))
    assert convert.main(["svhn", "--src", str(src), "--out", str(out), "--force", "--valid-fraction", "0.5"]) == 0
    assert not [n for n in os.listdir(out) if n.endswith(".dropped.txt")], "a replaced split's old list goes with it"


def test_a_file_given_as_src_is_answered_with_the_folder_that_holds_it(svhn_src, tmp_path, capsys):
    mat = svhn_src / "digitStruct.mat"
    assert convert.main(["svhn", "--src", str(mat), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert f"--src {mat} is a file; pass the folder that holds it: --src {svhn_src}\n" in err
    assert convert.main(["svhn", "--src", str(svhn_src), "--out", str(tmp_path / "data")]) == 0, "the advice works"


def test_a_mat_file_that_is_not_svhns_is_refused_by_name(tmp_path, capsys):
    src = tmp_path / "odd"
    src.mkdir()
    with h5py.File(src / "digitStruct.mat", "w") as mat:
        mat.create_dataset("something", data=np.zeros(3))
    assert convert.main(["svhn", "--src", str(src), "--out", str(tmp_path / "data")]) == 2
    assert "digitStruct.mat: has no digitStruct group" in capsys.readouterr().err
    (src / "digitStruct.mat").write_text("MATLAB 5.0 MAT-file")
    with pytest.raises(convert.ConvertError, match="not a MATLAB v7.3"):
        convert.convert("svhn", str(src), str(tmp_path / "data"), progress_stream=None)


def test_link_hard_links_instead_of_copying(svhn_src, tmp_path):
    out = tmp_path / "data"
    convert.convert("svhn", str(svhn_src), str(out), link=True, progress_stream=None)
    assert os.stat(out / "train" / "1.png").st_ino == os.stat(svhn_src / "1.png").st_ino


def _voc_xml(path, file_name, objects, size=None):
    parts = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                    f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    if size is not None:
        parts += f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    path.write_text(f"<annotation><filename>{file_name}</filename>{parts}</annotation>")


def test_voc_layout_converts_with_one_based_pixels_and_names_a_non_digit_class(tmp_path):
    src = tmp_path / "voc"
    (src / "Annotations").mkdir(parents=True)
    (src / "JPEGImages").mkdir()
    Image.new("RGB", (40, 30)).save(src / "JPEGImages" / "house_a.jpg")
    Image.new("RGB", (40, 30)).save(src / "JPEGImages" / "house_b.jpg")
    _voc_xml(src / "Annotations" / "house_a.xml", "house_a.jpg", [("4", 11, 6, 20, 25), ("2", 21, 6, 30, 25)])
    _voc_xml(src / "Annotations" / "house_b.xml", "house_b.jpg", [("7", 1, 1, 10, 10)])
    out = tmp_path / "data"
    convert.convert("voc", str(src), str(out), split="valid", progress_stream=None)
    split = load_split(str(out), "valid")
    assert [r.number for r in split.records] == ["42", "7"]
    assert split.records[0].boxes[0] == [10.0, 5.0, 20.0, 25.0], "VOC's 1-based inclusive box"
    assert split.records[0].path.endswith("1.jpg"), "non-numeric names get ids 1..N, the file keeps its type"

    _voc_xml(src / "Annotations" / "house_b.xml", "house_b.jpg", [("A", 1, 1, 10, 10)])
    with pytest.raises(convert.ConvertError, match=r"house_b.xml: object 1: class 'A' is not a digit"):
        convert.convert("voc", str(src), str(tmp_path / "other"), progress_stream=None)


def test_yolo_layout_converts_normalised_boxes_and_names_a_short_line(tmp_path):
    src = tmp_path / "yolo"
    (src / "images" / "train").mkdir(parents=True)
    (src / "labels" / "train").mkdir(parents=True)
    Image.new("RGB", (100, 50)).save(src / "images" / "train" / "12.png")
    Image.new("RGB", (100, 50)).save(src / "images" / "train" / "13.png")  # no label file: no digits
    (src / "labels" / "train" / "12.txt").write_text("1 0.25 0.5 0.1 0.4\n\n0 0.98 0.5 0.1 0.4\n")
    (src / "classes.txt").write_text("3\n8\n")
    out = tmp_path / "data"
    report = convert.convert("yolo", str(src), str(out), progress_stream=None)
    split = load_split(str(out), "train")
    assert [(r.image_id, r.number) for r in split.records] == [(12, "83"), (13, "-1")]
    assert split.records[0].boxes[0] == pytest.approx([20.0, 15.0, 30.0, 35.0])
    assert [str(p) for p in report.clipped] == ["12.png: labels/train/12.txt: line 3 (digit 3) ran 3 px past the "
                                                "100x50 image"], "the line of the file, then the digit it boxes"

    (src / "labels" / "train" / "12.txt").write_text("1 0.25 0.5 0.1\n")
    with pytest.raises(convert.ConvertError, match=r"labels/train/12.txt, line 1: 4 values; YOLO wants 5"):
        convert.convert("yolo", str(src), str(tmp_path / "other"), progress_stream=None)


def test_yolo_splits_are_converted_one_at_a_time_and_orphan_labels_are_named(tmp_path):
    src = tmp_path / "yolo"
    for subset in ("train", "val"):
        (src / "images" / subset).mkdir(parents=True)
        (src / "labels" / subset).mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(src / "images" / subset / "1.png")
        (src / "labels" / subset / "1.txt").write_text("4 0.5 0.5 0.2 0.4\n")
    with pytest.raises(convert.ConvertError, match=r"2 subfolders \(train, val\).*--subset"):
        convert.convert("yolo", str(src), str(tmp_path / "data"), progress_stream=None)
    assert not (tmp_path / "data").exists(), "a failed first run leaves no empty folder"
    convert.convert("yolo", str(src), str(tmp_path / "data"), split="valid", subset="val", progress_stream=None)
    assert [r.number for r in load_split(str(tmp_path / "data"), "valid").records] == ["4"]

    (src / "labels" / "train" / "2.txt").write_text("3 0.5 0.5 0.2 0.4\n")  # its image is gone
    with pytest.raises(convert.ConvertError, match=r"labels/train/2.txt labels an image that is missing"):
        convert.convert("yolo", str(src), str(tmp_path / "other"), subset="train", progress_stream=None)


def test_boxes_past_the_image_are_clipped_and_reported(tmp_path):
    src = tmp_path / "voc"
    src.mkdir()
    Image.new("RGB", (160, 50)).save(src / "5.jpg")
    _voc_xml(src / "5.xml", "5.jpg", [("3", 11, 6, 400, 25)])
    report = convert.convert("voc", str(src), str(tmp_path / "data"), progress_stream=None)
    assert len(report.clipped) == 1 and "5.xml: object 1 (digit 3) ran 240 px past the 160x50 image" \
        in str(report.clipped[0])
    assert load_split(str(tmp_path / "data"), "train").records[0].boxes[0] == [10.0, 5.0, 160.0, 25.0]


def test_valid_fraction_only_splits_training_images(svhn_src, tmp_path):
    with pytest.raises(convert.ConvertError, match="--valid-fraction: carves valid/ out of the training images"):
        convert.convert("svhn", str(svhn_src), str(tmp_path / "data"), split="test", valid_fraction=0.3,
                        progress_stream=None)


@pytest.mark.parametrize("orientation", [6, 3])
def test_yolo_labels_of_a_photo_stored_rotated_land_on_its_digit_in_the_image_written_upright(
        tmp_path, capsys, orientation):
    src = tmp_path / "yolo"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    shown, digit = (64, 40), (38, 6, 52, 30)  # off-centre: any turn or flip moves it
    _photo(src / "images" / "1.jpg", shown, digit, orientation)
    _photo(src / "images" / "2.jpg", shown, digit, 1)
    _photo(src / "images" / "3.tif", shown, digit, orientation, "TIFF")  # Pillow reads a TIFF turned already
    line = (f"7 {(digit[0] + digit[2]) / 2 / shown[0]} {(digit[1] + digit[3]) / 2 / shown[1]} "
            f"{(digit[2] - digit[0]) / shown[0]} {(digit[3] - digit[1]) / shown[1]}\n")
    for stem in ("1", "2", "3"):
        (src / "labels" / f"{stem}.txt").write_text(line)
    out = tmp_path / "data"
    assert convert.main(["yolo", "--src", str(src), "--out", str(out)]) == 0
    assert "1 image stored rotated (EXIF orientation) was written upright" in capsys.readouterr().out
    for record in load_split(str(out), "train").records:
        stored = decode_image(record.path, exif_transpose=False)  # what training reads
        assert record.boxes[0] == pytest.approx(_red_box(stored), abs=1.5), record.path
        assert (record.width, record.height) == stored.size == shown
    with Image.open(out / "train" / "1.jpg") as written:
        assert written.format == "JPEG" and ORIENTATION not in written.getexif(), "every reader sees it upright"
    for name in ("2.jpg", "3.tif"):
        assert (out / "train" / name).read_bytes() == (src / "images" / name).read_bytes(), "copied as it was"

    linked = tmp_path / "linked"
    convert.convert("yolo", str(src), str(linked), link=True, progress_stream=None)
    assert os.stat(linked / "train" / "2.jpg").st_ino == os.stat(src / "images" / "2.jpg").st_ino
    assert os.stat(linked / "train" / "1.jpg").st_ino != os.stat(src / "images" / "1.jpg").st_ino


@pytest.mark.parametrize("frame, orientation", [("stored", 6), ("shown", 6), (None, 6), ("both", 3)])
def test_voc_size_says_which_frame_the_boxes_of_a_photo_stored_rotated_refer_to(tmp_path, frame, orientation):
    src = tmp_path / "voc"
    src.mkdir()
    shown, digit = (64, 40), (38, 6, 52, 30)
    _photo(src / "1.jpg", shown, digit, orientation)
    with Image.open(src / "1.jpg") as stored:
        size, box = (stored.size, _red_box(stored)) if frame == "stored" else (shown, list(digit))
    x0, y0, x1, y1 = (round(v) for v in box)
    _voc_xml(src / "1.xml", "1.jpg", [("5", x0 + 1, y0 + 1, x1, y1)], size if frame else None)
    report = convert.convert("voc", str(src), str(tmp_path / "data"), progress_stream=None)
    record = load_split(str(tmp_path / "data"), "train").records[0]
    assert record.boxes[0] == pytest.approx(_red_box(decode_image(record.path, exif_transpose=False)), abs=1.5)
    kept = frame == "stored"
    copied = open(record.path, "rb").read() == (src / "1.jpg").read_bytes()
    assert copied == kept and report.upright == (0 if kept else 1)
    warnings = [str(p) for p in report.orientation]
    if kept:
        assert record.boxes[0] == [x0, y0, x1, y1], "the stored pixels' boxes, as they were"
        assert len(warnings) == 1 and "1.xml: viewers show it rotated (EXIF orientation 6" in warnings[0]
        assert "its boxes refer to the stored pixels: kept as stored" in warnings[0]
    elif frame == "shown":
        assert warnings == []
    else:
        assert len(warnings) == 1 and "assumed its boxes were drawn on the picture as shown" in warnings[0]
        assert ("no usable <size>" if frame is None else "fits both") in warnings[0]


def test_an_image_too_large_to_open_is_named_not_a_crash(tmp_path):
    src = tmp_path / "yolo"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    Image.new("1", (20_000, 10_000)).save(src / "images" / "1.png")  # 200 Mpx: Pillow refuses to open it
    Image.new("RGB", (100, 50)).save(src / "images" / "2.png")
    with pytest.raises(convert.ConvertError, match=r"1.png: unreadable image \(too large to open"):
        convert.convert("yolo", str(src), str(tmp_path / "data"), progress_stream=None)
    report = convert.convert("yolo", str(src), str(tmp_path / "data"), skip_invalid=True, progress_stream=None)
    assert len(report.dropped) == 1 and load_split(str(tmp_path / "data"), "train").records[0].image_id == 2
