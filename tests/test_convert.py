import csv
import json
import os

import h5py
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from core import convert
from core.data import load_split


def _png(path, size, colour=(90, 120, 200)):
    Image.new("RGB", size, colour).save(path)


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
    assert len(report.empty_boxes) == 1 and "record 3 (3.png)" in str(report.empty_boxes[0])

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
    assert "record 2 (2.png): image 2.png is missing" in message and "record 3 (3.png): label 11 is outside 1..10" in message
    assert not (out / "train.json").exists()
    assert convert.main(["svhn", "--src", str(src), "--out", str(out), "--skip-invalid"]) == 0
    assert "dropped 2 invalid records:" in capsys.readouterr().out
    assert [r.image_id for r in load_split(str(out), "train").records] == [1]


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


def _voc_xml(path, file_name, objects):
    parts = "".join(f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
                    f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
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
    (src / "labels" / "train" / "12.txt").write_text("1 0.25 0.5 0.1 0.4\n0 0.5 0.5 0.1 0.4\n")
    (src / "classes.txt").write_text("3\n8\n")
    out = tmp_path / "data"
    convert.convert("yolo", str(src), str(out), progress_stream=None)
    split = load_split(str(out), "train")
    assert [(r.image_id, r.number) for r in split.records] == [(12, "83"), (13, "-1")]
    assert split.records[0].boxes[0] == pytest.approx([20.0, 15.0, 30.0, 35.0])

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
    assert len(report.clipped) == 1 and "ran 240 px past the 160x50 image" in str(report.clipped[0])
    assert load_split(str(tmp_path / "data"), "train").records[0].boxes[0] == [10.0, 5.0, 160.0, 25.0]


def test_valid_fraction_only_splits_training_images(svhn_src, tmp_path):
    with pytest.raises(convert.ConvertError, match="--valid-fraction: carves valid/ out of the training images"):
        convert.convert("svhn", str(svhn_src), str(tmp_path / "data"), split="test", valid_fraction=0.3,
                        progress_stream=None)
