import copy
import csv
import io
import json
import os
import re

import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from conftest import assert_same_detections
from core.data import load_split
from core.model import (InputSize, ModelError, closer_look_of, input_size_of, rebuild_model, resize_by,
                        resolve_model_kwargs)
from core.predict import (NumberReader, _digits_only, add_reader_arguments, assign_image_ids, coco_results,
                          image_ids_csv_bytes, detect, load_model, main as predict_main, number_region, parse_input_size,
                          parse_reader, pred_csv_bytes, read_digits, read_number, reader_from_arguments, repeated_names,
                          share_line_height)


def _det(*items):
    """items: (x0, digit, score) with unit-height boxes 10 px wide."""
    return {"boxes": [[x, 0, x + 10, 20] for x, _, _ in items], "digits": [d for _, d, _ in items],
            "scores": [s for _, _, s in items]}


def test_reads_digits_left_to_right():
    assert read_number(_det((40, 3, 0.9), (0, 1, 0.8), (20, 7, 0.95))) == "173"


def test_no_digit_gives_minus_one():
    assert read_number(_det()) == "-1"
    assert read_number(_det((0, 4, 0.2), (20, 5, 0.3)), 0.5) == "-1"


def test_overlapping_duplicates_of_different_classes_keep_the_best():
    det = _det((0, 1, 0.9), (1, 7, 0.6), (20, 2, 0.8), (21, 2, 0.55))
    assert read_number(det) == "12"
    # A small box inside a bigger one (a "1" found inside a "4") is the same glyph.
    det = {"boxes": [[0, 0, 12, 20], [4, 2, 9, 18], [15, 0, 27, 20]], "digits": [4, 1, 5], "scores": [0.9, 0.7, 0.9]}
    assert read_number(det) == "45"


def test_threshold_filters_low_scores():
    det = _det((0, 1, 0.9), (20, 8, 0.4))
    assert read_number(det, 0.5) == "1"
    assert read_number(det, 0.3) == "18"


def _box(x, y, h, digit, score):
    return [x, y, x + 0.55 * h, y + h], digit, score


def _dets(*items):
    """items: _box(...) tuples of any size and place."""
    return {"boxes": [b for b, _, _ in items], "digits": [d for _, d, _ in items], "scores": [s for _, _, s in items]}


def test_one_line_reader_reads_only_the_number_around_the_surest_digit():
    # A plate "42" and, far off in the same photo, a "7" on a wall and a "1" in a line of text below.
    det = _dets(_box(300, 200, 40, 4, 0.95), _box(325, 201, 40, 2, 0.9),
                _box(40, 30, 40, 7, 0.92), _box(310, 300, 20, 1, 0.9))
    assert read_number(det, NumberReader(0.7, 0.7, one_line=False)) == "7412"
    assert read_number(det, NumberReader(0.7, 0.7)) == "42"


def test_one_line_reader_keeps_a_number_with_a_digit_gap_and_stops_at_a_wider_one():
    gap_of = lambda k: _dets(_box(0, 0, 40, 1, 0.9), _box(22 + k * 40, 0, 40, 2, 0.9))
    assert read_number(gap_of(0.9), NumberReader(0.5, 0.5)) == "12"
    assert read_number(gap_of(1.2), NumberReader(0.5, 0.5)) == "1"


def test_the_digits_of_the_number_read_share_their_median_height_and_nothing_else_moves():
    det = _dets(_box(100, 50, 40, 4, 0.95), _box(124, 48, 46, 2, 0.9), _box(150, 52, 36, 7, 0.6),
                _box(160, 53, 34, 1, 0.4),  # under 0.5: not part of the number
                _box(400, 300, 20, 9, 0.8))  # another line
    shared = share_line_height(det, 480)
    assert [b[3] - b[1] for b in shared["boxes"][:3]] == pytest.approx([40, 40, 40]), "the median of 40, 46, 36"
    for before, after in zip(det["boxes"][:3], shared["boxes"][:3]):
        assert (after[1] + after[3]) / 2 == pytest.approx((before[1] + before[3]) / 2), "each keeps its centre"
        assert (after[0], after[2]) == (before[0], before[2]), "and its width"
    assert shared["boxes"][3:] == det["boxes"][3:]
    assert (shared["scores"], shared["digits"]) == (det["scores"], det["digits"])
    assert read_number(shared, NumberReader(0.5, 0.5)) == read_number(det, NumberReader(0.5, 0.5)) == "427"
    assert det["boxes"][1] == [124, 48, 124 + 0.55 * 46, 94], "the detection passed in is left as it was"
    lone = _dets(_box(0, 0, 40, 5, 0.9), _box(300, 0, 20, 6, 0.9))
    assert share_line_height(lone, 480) == lone, "a lone digit keeps its own box"
    assert share_line_height(_dets(), 480) == _dets()


def test_a_digit_cut_by_the_image_edge_keeps_the_edge_it_sees_and_is_not_measured():
    # A 50 px tall image: "3" cut at the top (its box starts at 0), "8" cut at the bottom, "5" and "6" whole.
    det = _dets(_box(0, 0, 30, 3, 0.9), _box(20, 20, 30, 8, 0.9), _box(40, 5, 40, 5, 0.95), _box(64, 4, 42, 6, 0.9))
    three, eight, five, six = share_line_height(det, 50)["boxes"]
    assert (five[1], five[3]) == (4.5, 45.5) and (six[1], six[3]) == (4.5, 45.5), "the whole ones' median: 41"
    assert (three[1], three[3]) == (0.0, 30), "cut at the top: its bottom edge kept, 41 px up, clipped"
    assert (eight[1], eight[3]) == (20, 50.0), "cut at the bottom: its top edge kept"
    stretched = share_line_height(_dets(_box(0, 2, 30, 1, 0.95), _box(20, 10, 40, 2, 0.9)), 60)
    assert stretched["boxes"][0][1] == 0.0, "a box re-centred past the edge is clipped to the image"
    assert stretched["boxes"][1][1:4:2] == [12.5, 47.5]


def test_a_model_that_shares_line_heights_reads_the_same_digits_with_one_height():
    loaded = load_model(None, "cpu")
    plates = [_plate("274", 30), _plate("58", 40)]
    loaded.model.line_heights = "own"
    own = detect(loaded, plates)
    loaded.model.line_heights = "shared"
    shared = detect(loaded, plates)
    for plate, mine, theirs in zip(plates, own, shared):
        expected = share_line_height(mine, plate.size[1])
        assert theirs["digits"] == expected["digits"] and theirs["scores"] == expected["scores"]
        assert theirs["boxes"] == [pytest.approx(box) for box in expected["boxes"]]
        line = read_digits(theirs, NumberReader(0.5, 0.5))
        assert len(line) >= 2 and len({round(theirs["boxes"][i][3] - theirs["boxes"][i][1], 4) for i in line}) == 1
    assert any(a["boxes"] != b["boxes"] for a, b in zip(own, shared)), "the model's own heights differ"


def test_anchor_and_member_scores():
    det = _dets(_box(0, 0, 40, 1, 0.95), _box(24, 0, 40, 8, 0.55), _box(48, 0, 40, 3, 0.35))
    assert read_number(det, NumberReader(0.9, 0.5)) == "18", "a weaker neighbour of a sure digit is read"
    assert read_number(det, NumberReader(0.9, 0.3)) == "183"
    assert read_number(det, NumberReader(0.97, 0.3)) == "-1", "no digit sure enough: no number"
    lonely = _dets(_box(0, 0, 40, 6, 0.6))
    assert read_number(lonely, NumberReader(0.9, 0.5)) == "-1" and read_number(lonely, 0.5) == "6"


def test_a_number_of_one_digit_needs_its_own_score():
    lone = _dets(_box(0, 0, 40, 0, 0.93), _box(300, 200, 20, 4, 0.4))  # a ring on a wall, and a weak stray
    pair = _dets(_box(0, 0, 40, 1, 0.93), _box(24, 0, 40, 8, 0.7))
    reader = NumberReader(0.85, 0.6, single=0.95)
    assert read_number(lone, NumberReader(0.85, 0.6)) == "0" and read_number(lone, reader) == "-1"
    assert read_number(pair, reader) == "18", "a line of two digits needs only the anchor"
    assert read_number(_dets(_box(0, 0, 40, 7, 0.97)), reader) == "7", "a sure lone digit is still read"
    assert "one digit needs >= 0.95" in reader.describe()
    assert NumberReader.from_meta({"task2_reader": reader.as_dict()}) == reader
    assert "single" not in NumberReader(0.85, 0.6).as_dict(), "readers without it record what they did before"
    with pytest.raises(ValueError, match="single 0.8 is below anchor 0.85"):
        NumberReader(0.85, 0.6, single=0.8)


def test_a_gap_reader_reads_a_low_digit_between_two_digits_of_the_line_and_nothing_else():
    # "9315": the thin "1" squeezed between 3 and 5 scores 0.4; a 0.45 "7" sits past the number's end, a 0.5 "8"
    # half a height below the line, and a 0.6 "2" on the "3" itself.
    det = _dets(_box(0, 0, 40, 9, 0.95), _box(24, 0, 40, 3, 0.9), _box(42, 1, 40, 1, 0.4), _box(56, 0, 40, 5, 0.9),
                _box(80, 0, 40, 7, 0.45), _box(40, 24, 40, 8, 0.5), _box(25, 1, 40, 2, 0.6))
    assert read_number(det, NumberReader(0.8, 0.7)) == "935"
    assert read_number(det, NumberReader(0.8, 0.7, gap=0.35)) == "9315"
    assert read_number(det, NumberReader(0.8, 0.7, gap=0.42)) == "935", "the gap's own score still counts"
    alone = _dets(_box(0, 0, 40, 9, 0.95), _box(22, 0, 40, 1, 0.4))
    assert read_number(alone, NumberReader(0.8, 0.7, gap=0.35)) == "9", "a digit at the end is no gap"


def test_reader_values_are_checked_and_parsed():
    assert parse_reader("0.7,0.6") == NumberReader(0.7, 0.6) and parse_reader("0.8") == NumberReader(0.8, 0.8)
    assert parse_reader("0.85,0.6,0.9") == NumberReader(0.85, 0.6, single=0.9)
    for bad in ("x", "0.7,0.6,0.5", "0.6,0.7", "1.5", "0.7,0.6,0.9,0.9"):
        with pytest.raises(ValueError, match="reader"):
            parse_reader(bad)
    gap = NumberReader(0.8, 0.7, gap=0.35)
    assert NumberReader.from_meta({"task2_reader": gap.as_dict()}) == gap and "between two" in gap.describe()
    for bad in (dict(gap=0.75), dict(gap=0.3, one_line=False), dict(gap=-0.1)):
        with pytest.raises(ValueError, match="gap"):
            NumberReader(0.8, 0.7, **bad)
    assert NumberReader.from_meta({}) == NumberReader.plain(0.5)
    assert NumberReader.from_meta({"task2_threshold": 0.7}) == NumberReader(0.7, 0.7, one_line=False)
    assert NumberReader.from_meta({"task2_reader": {"anchor": 0.8, "member": 0.5, "one_line": True}}) == \
        NumberReader(0.8, 0.5)
    for bad in ({"anchor": 0.8, "threshold": 0.5}, {}, [0.8, 0.5]):
        with pytest.raises(ValueError, match="task2_reader"):
            NumberReader.from_meta({"task2_reader": bad})


def test_a_photo_is_read_with_the_readers_photo_scores_and_a_crop_with_its_own():
    faint = _dets(_box(0, 0, 40, 4, 0.6), _box(24, 0, 40, 2, 0.55))  # a real "42" scored low, or a wall's strays
    reader = NumberReader(0.5, 0.5, photos=NumberReader(0.8, 0.7))
    assert read_number(faint, reader) == "42", "a crop (no photo mark) reads with the crop scores"
    assert read_number({**faint, "photo": False}, reader) == "42"
    assert read_number({**faint, "photo": True}, reader) == "-1", "a photo needs the photo scores"
    assert read_number({**faint, "photo": True}, NumberReader(0.5, 0.5)) == "42", "no photo scores: one reader"
    assert reader.for_detection({"photo": True}) == NumberReader(0.8, 0.7)
    assert NumberReader.from_meta({"task2_reader": reader.as_dict()}) == reader
    assert reader.as_dict()["photos"] == {"anchor": 0.8, "member": 0.7, "one_line": True}
    assert "photos" not in NumberReader(0.5, 0.5).as_dict(), "readers without it record what they did before"
    assert reader.describe().endswith("In a photo: a number needs one digit scoring >= 0.80, then the line of "
                                      "digits around it scoring >= 0.70")
    with pytest.raises(ValueError, match="photos"):
        NumberReader(0.5, 0.5, photos=reader)
    with pytest.raises(ValueError, match="task2_reader"):
        NumberReader.from_meta({"task2_reader": {**reader.as_dict(), "photos": reader.as_dict()}})


def test_reader_arguments_replace_the_whole_reader_or_only_the_photo_scores():
    import argparse

    parser = argparse.ArgumentParser()
    add_reader_arguments(parser)
    recorded = NumberReader(0.5, 0.5, photos=NumberReader(0.8, 0.7))

    def read(*argv):
        return reader_from_arguments(parser.parse_args(argv), recorded)

    assert read() == recorded
    assert read("--task2-reader", "0.6,0.4") == NumberReader(0.6, 0.4), "a reader asked for reads photos too"
    assert read("--photo-reader", "0.9,0.6") == NumberReader(0.5, 0.5, photos=NumberReader(0.9, 0.6))
    assert read("--photo-reader", "same") == NumberReader(0.5, 0.5)
    assert read("--task2-gap", "0.35") == NumberReader(0.5, 0.5, gap=0.35, photos=NumberReader(0.8, 0.7, gap=0.35))
    with pytest.raises(ValueError, match="--photo-reader 'often' \\(scores such as 0.8,0.7, or 'same'\\)"):
        read("--photo-reader", "often")


def test_detect_marks_the_images_the_models_own_size_policy_reduces_as_photos():
    torch.manual_seed(0)
    model = rebuild_model(resolve_model_kwargs("digitnet_fpn")).eval()
    images = [Image.new("RGB", (226, 208), "white"), Image.new("RGB", (1280, 720), "white")]
    assert [found["photo"] for found in detect(model, images)] == [False, True]
    # A size asked for changes how the model sees an image, not whether it is a photo.
    assert [found["photo"] for found in detect(model, images, input_size=400)] == [False, True]


def test_coco_results_use_xywh_and_category_plus_one():
    [entry] = coco_results(7, {"boxes": [[10.0, 5.0, 30.0, 45.0]], "scores": [0.5], "digits": [0]})
    assert entry == {"image_id": 7, "bbox": [10.0, 5.0, 20.0, 40.0], "score": 0.5, "category_id": 1}


def test_csv_sorted_with_header():
    text = pred_csv_bytes([(10, "12"), (2, "-1"), (3, "7")]).decode()
    assert text == "image_id,pred_label\n2,-1\n3,7\n10,12\n"


def test_image_ids_from_file_names():
    assert assign_image_ids(["3.png", "10.png", "1.jpg"]) == [3, 10, 1]
    assert assign_image_ids(["5.png", "photo.jpg", "a.png"]) == [5, 7, 6], "other names in name order"


def test_the_same_files_get_the_same_ids_in_any_order():
    names = ["door.jpg", "12.png", "12.jpg", "IMG_0001.jpg", "3.png"]
    ids = dict(zip(names, assign_image_ids(names)))
    assert ids["12.png"] == 12 or ids["12.jpg"] == 12
    for order in (names[::-1], sorted(names), names[2:] + names[:2]):
        assert dict(zip(order, assign_image_ids(order))) == ids
    assert len(set(ids.values())) == len(names)
    assert image_ids_csv_bytes(names, [ids[n] for n in names]).decode().splitlines()[0] == "file_name,image_id"
    assert image_ids_csv_bytes(["1.png", "2.png"], [1, 2]) is None


def test_files_of_one_name_get_ids_by_content_in_any_order():
    """Two uploads named 1.png (from two folders): which one keeps id 1 does not depend on the upload order,
    and the mapping file is offered, since one id is not the number in its name."""
    files = [("1.png", b"first picture"), ("1.png", b"second picture"), ("2.png", b"third")]
    ids = assign_image_ids([n for n, _ in files], [c for _, c in files])
    by_content = {c: i for (_, c), i in zip(files, ids)}
    assert sorted(ids) == [1, 2, 3] and by_content[b"third"] == 2
    for order in (files[::-1], [files[1], files[2], files[0]]):
        again = assign_image_ids([n for n, _ in order], [c for _, c in order])
        assert {c: i for (_, c), i in zip(order, again)} == by_content
    mapping = image_ids_csv_bytes([n for n, _ in files], ids).decode().splitlines()
    assert sorted(mapping[1:]) == ["1.png,1", "1.png,3", "2.png,2"]
    assert repeated_names(["b.png", "1.png", "b.png", "1.png", "2.png"]) == ["1.png", "b.png"]
    assert repeated_names(["1.png", "2.png"]) == []


def test_cli_writes_task1_and_task2_files(tiny_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "pred"
    assert predict_main(["--ckpt", f"{tiny_run}/best.pt", "--images", f"{tiny_data}/test", "--out", str(out),
                         "--device", "cpu", "--task2-threshold", "0.0"]) == 0
    results = json.loads((out / "pred.json").read_text())
    assert isinstance(results, list)
    for r in results:
        assert set(r) == {"image_id", "bbox", "score", "category_id"}
        assert 1 <= r["category_id"] <= 10 and len(r["bbox"]) == 4
    rows = list(csv.reader(io.StringIO((out / "pred.csv").read_text())))
    assert rows[0] == ["image_id", "pred_label"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 9))
    assert all(r[1] == "-1" or r[1].isdigit() for r in rows[1:])
    # Task 1 output is what pycocotools accepts as detections for the test split's ground truth.
    gt = COCO()
    gt.dataset = load_split(tiny_data, "test").coco()
    gt.createIndex()
    if results:
        dt = gt.loadRes(str(out / "pred.json"))
        assert len(dt.getAnnIds()) == len(results)


def test_cli_reads_numbers_with_the_reader_asked_for(tiny_run, tiny_data, tmp_path, capsys):
    common = ["--ckpt", f"{tiny_run}/best.pt", "--images", f"{tiny_data}/test", "--device", "cpu"]
    assert predict_main(common + ["--out", str(tmp_path / "a"), "--task2-reader", "0.2,0.05"]) == 0
    assert "a number needs one digit scoring >= 0.20, then the line of digits around it scoring >= 0.05" \
        in capsys.readouterr().out
    loaded = load_model(f"{tiny_run}/best.pt", "cpu")
    names = sorted(os.listdir(f"{tiny_data}/test"), key=lambda n: int(n.split(".")[0]))
    detections = detect(loaded, [Image.open(f"{tiny_data}/test/{n}") for n in names])
    rows = list(csv.reader(io.StringIO((tmp_path / "a" / "pred.csv").read_text())))[1:]
    assert [r[1] for r in rows] == [read_number(d, NumberReader(0.2, 0.05)) for d in detections]
    assert predict_main(common + ["--out", str(tmp_path / "b"), "--task2-reader", "0.2,0.5"]) == 2
    assert "member 0.5 is above anchor 0.2" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert predict_main(common + ["--out", str(tmp_path / "b"), "--task2-threshold", "2"]) == 2
    assert "--task2-threshold 2 is not a score between 0 and 1" in capsys.readouterr().err


def test_cli_checks_its_paths_first_and_leaves_no_stale_id_map(tiny_run, tiny_data, tmp_path, capsys):
    import shutil

    from conftest import tag_rotated

    common = ["--ckpt", f"{tiny_run}/best.pt", "--device", "cpu"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit):
        predict_main(common + ["--images", f"{tiny_data}/test", "--out", str(tmp_path / "afile")])
    assert "--out" in capsys.readouterr().err and (tmp_path / "afile").read_text() == "x"
    with pytest.raises(SystemExit):
        predict_main(common + ["--images", f"{tiny_data}/test/1.png", "--out", str(tmp_path / "o")])
    assert f"is a file: pass the folder that holds it ({tiny_data}/test)" in capsys.readouterr().err
    named = tmp_path / "named"
    named.mkdir()
    shutil.copy(f"{tiny_data}/test/1.png", named / "front.png")
    tag_rotated(named / "front.png")
    out = tmp_path / "out"
    assert predict_main(common + ["--images", str(named), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert (out / "image_ids.csv").exists() and "1 image(s) stored rotated (front.png) were read upright" in said
    assert predict_main(common + ["--images", f"{tiny_data}/test", "--out", str(out)]) == 0
    assert not (out / "image_ids.csv").exists(), "an earlier run's ids would misname this run's images"
    assert "stored rotated" not in capsys.readouterr().out


def test_load_model_rebuilds_from_the_checkpoint_alone(tiny_run):
    loaded = load_model(f"{tiny_run}/best.pt", "cpu")
    assert loaded.meta["arch"] == "digitnet_fpn"
    assert loaded.meta["class_names"] == [str(d) for d in range(10)]
    assert not loaded.model.training
    assert loaded.meta["model_kwargs"]["min_size"] == 64


def test_cli_reports_bad_checkpoint(tmp_path, tiny_data, capsys):
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    assert predict_main(["--ckpt", str(bogus), "--images", f"{tiny_data}/test", "--out", str(tmp_path / "o")]) == 2
    assert "bogus.pt" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o" / "pred.json")


def test_odd_numeric_looking_names_get_assigned_ids():
    assert assign_image_ids(["².png", "7.png", "1" * 40 + ".png"]) == [9, 7, 8]


def test_a_zero_task2_threshold_is_respected(tiny_run, tmp_path):
    from core.checkpoint import CheckpointError, export

    export(f"{tiny_run}/best.pt", str(tmp_path / "zero.pt"), task2_threshold=0.0)
    assert load_model(str(tmp_path / "zero.pt"), "cpu").reader == NumberReader.plain(0.0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        export(f"{tiny_run}/best.pt", str(tmp_path / "bad.pt"), task2_threshold=50)
    import torch

    payload = torch.load(tmp_path / "zero.pt", weights_only=True)
    payload["task2_threshold"] = 50
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="anchor 50"):
        load_model(str(tmp_path / "tampered.pt"), "cpu")
    payload["task2_reader"] = {"anchor": 0.5, "member": 0.9, "one_line": True}
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="member 0.9 is above anchor 0.5"):
        load_model(str(tmp_path / "tampered.pt"), "cpu")


@pytest.mark.parametrize("size_policy", ["auto", "fixed"])
def test_padded_input_size_matches_what_the_model_sees(size_policy):
    import torch

    model = rebuild_model(resolve_model_kwargs("digitnet_fpn", {"size_policy": size_policy})).eval()
    policy = input_size_of(model)
    assert policy.mode == size_policy
    for height, width in [(30, 29), (19, 30), (91, 171), (208, 226), (225, 450), (720, 1280), (1, 1), (40, 5000)]:
        resized = resize_by(torch.zeros(3, height, width), policy.scale(height, width))
        batch, _ = model.transform([resized])
        assert batch.image_sizes[0] == tuple(resized.shape[-2:]), "the model resizes nothing more at inference"
        assert policy.padded_size(height, width) == tuple(batch.tensors.shape[-2:]), (height, width)


def test_auto_input_size_keeps_small_digits_in_large_images():
    auto = InputSize("auto", 128, 384, 512)
    assert auto.scale(30, 60) == pytest.approx(128 / 30), "a small crop is enlarged to a 128 px short side"
    assert auto.scale(208, 226) == 1.0, "an image of ordinary size is seen at its own resolution"
    assert auto.scale(720, 1280) == pytest.approx(512 / 1280), "a photo is reduced to a 512 px long side"
    assert auto.scale(3000, 3100) == pytest.approx(384 / 3000)
    fixed = InputSize("fixed", 112, 112, 400)
    assert fixed.scale(208, 226) == pytest.approx(112 / 208), "torchvision's rule shrinks the same image"
    model = rebuild_model(resolve_model_kwargs("digitnet_fpn"))
    assert input_size_of(model, 300) == InputSize("fixed", 300, 300, 2000), "the short side asked for, long side <= 2000"
    assert input_size_of(model, "auto") == input_size_of(model) == auto
    with pytest.raises(ModelError, match="must be 'auto' or a short side"):
        input_size_of(model, 5)
    assert parse_input_size(None) is None and parse_input_size("auto") == "auto" and parse_input_size("320") == 320
    for bad in ("big", "0", "99999"):
        with pytest.raises(ValueError, match="input size"):
            parse_input_size(bad)


def test_checkpoints_from_before_the_size_policy_read_as_they_did():
    """A checkpoint whose model kwargs have no size policy (the v2 default) still reads once at its
    fixed short side, so its recorded numbers stay reproducible."""
    import torch

    old = {k: v for k, v in resolve_model_kwargs("digitnet_fpn").items()
           if not k.startswith(("size_policy", "auto_", "train_scale", "refine_"))}
    torch.manual_seed(0)
    model = rebuild_model(old).eval()
    assert input_size_of(model) == InputSize("fixed", 112, 112, 400)
    from core.model import refine_policy_of

    assert refine_policy_of(model).below_px == 0
    # Detections equal the single pass through torchvision's own transform that such a checkpoint was scored with.
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    reference = copy.deepcopy(model)
    reference.transform = GeneralizedRCNNTransform((96, 128, 112), 400, model.transform.image_mean,
                                                   model.transform.image_std).eval()
    reference.roi_heads.score_thresh = model.roi_heads.score_thresh = 0.0
    for height, width in [(86, 385), (30, 60), (208, 226)]:
        image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.inference_mode():
            expected = reference([image])[0]
        found = detect(model, [image])[0]
        assert found["scores"] == pytest.approx(expected["scores"].tolist(), abs=1e-5)
        assert_same_detections(list(zip(expected["scores"].tolist(), expected["boxes"].tolist())),
                               list(zip(found["scores"], found["boxes"])), score_tol=1e-5, box_tol=1e-3)


def test_number_region_is_the_confident_digits_on_one_line():
    det = {"boxes": [[100, 50, 110, 70], [112, 51, 122, 70], [124, 50, 134, 71],  # the number
                     [300, 200, 340, 260],  # a large false box on the wall
                     [150, 52, 160, 70]],  # a weak digit beside it
           "digits": [1, 2, 3, 8, 4], "scores": [0.9, 0.95, 0.8, 0.7, 0.2]}
    region, digit_h = number_region(det, 0.4)
    assert region == [100, 50, 134, 71] and digit_h == 20
    assert number_region(det, 0.99) is None


def test_training_resizes_by_the_policy_with_jitter():
    import torch

    model = rebuild_model(resolve_model_kwargs("digitnet_fpn")).train()
    image = torch.rand(3, 60, 120)
    target = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 50.0]]), "labels": torch.tensor([2])}
    shorts = []
    for _ in range(20):
        resized, out = model.transform.resize(image, {k: v.clone() for k, v in target.items()})
        scale = resized.shape[-2] / 60
        shorts.append(resized.shape[-2])
        assert out["boxes"][0].tolist() == pytest.approx([10 * scale, 10 * scale, 30 * scale, 50 * scale], rel=0.03)
    assert 128 * 0.8 - 1 <= min(shorts) < max(shorts) <= 128 * 1.25 + 1


def test_an_images_detections_do_not_depend_on_its_batch(tiny_data):
    from core.images import decode_image

    loaded = load_model(None, "cpu")
    images = [decode_image(os.path.join(tiny_data, "test", f"{i}.png")) for i in range(1, 9)]
    policy = input_size_of(loaded.model)
    assert len({policy.padded_size(im.height, im.width) for im in images}) > 1, "needs mixed sizes"
    alone = [detect(loaded, [image])[0] for image in images]
    for batched in (detect(loaded, images, batch_size=8), detect(loaded, images[::-1], batch_size=3)[::-1]):
        for one, other in zip(alone, batched):
            assert len(one["scores"]) == len(other["scores"])
            assert one["digits"] == other["digits"]
            assert one["scores"] == pytest.approx(other["scores"], abs=1e-4)
            assert sum(one["boxes"], []) == pytest.approx(sum(other["boxes"], []), abs=1e-2)


def _plate(text: str, size: int = 40) -> "Image.Image":
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)  # Pillow's own font: present on every machine
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("RGB", (right - left + size // 2, bottom - top + size // 2), (232, 230, 220))
    ImageDraw.Draw(image).text((size // 4 - left, size // 4 - top), text, font=font, fill=(25, 25, 35))
    return image


@pytest.mark.parametrize("text", ["274", "1093", "58"])
def test_a_small_image_pasted_into_a_large_canvas_is_read_the_same(text):
    """The number found small in a large image is read from its own region, as if it came alone."""
    from PIL import Image

    loaded = load_model(None, "cpu")
    # A plate at about a tenth of the photo's width (a house number seen from the street).
    for font_size, canvas_size, at in ((26, (640, 480), (40, 300)), (56, (1280, 720), (900, 120)),
                                       (56, (1280, 720), (600, 500))):
        plate = _plate(text, font_size)
        alone = detect(loaded, [plate])[0]
        assert read_number(alone, loaded.reader) == text
        canvas = Image.new("RGB", canvas_size, (255, 255, 255))
        canvas.paste(plate, at)
        found = detect(loaded, [canvas])[0]
        assert read_number(found, loaded.reader) == text, (canvas_size, at)
        x0, y0, x1, y1 = found["region"]
        near = plate.size[1]  # the crop read in pass 2 reaches up to a digit height past the digits
        assert at[0] - near <= x0 and x1 <= at[0] + plate.size[0] + near, "the region read is where the plate is"
        assert at[1] - near <= y0 and y1 <= at[1] + plate.size[1] + near


@pytest.mark.parametrize("text", ["274", "1093"])
def test_a_small_plate_in_a_large_photo_is_found_by_the_closer_look(text):
    """Digits 13 px tall in a 1,280 px photo are 5 px after pass 1's reduction to 512 px: pass 1 finds
    nothing, and the closer look at 896 px reads the number."""
    loaded = load_model(None, "cpu")
    assert closer_look_of(loaded.model) is not None, "the shipped model looks closer"
    plate = _plate(text, 18)
    for canvas_size, at in (((1280, 960), (500, 400)), ((1280, 720), (100, 600)), ((960, 1280), (300, 900))):
        canvas = Image.new("RGB", canvas_size, (255, 255, 255))
        canvas.paste(plate, at)
        found = detect(loaded, [canvas])[0]
        assert read_number(found, loaded.reader) == text, canvas_size
        assert "looked at again, closer (long side up to 896 px)" in found["read_again"]
        x0, y0, x1, y1 = found["region"]
        assert at[0] - 20 <= x0 and x1 <= at[0] + plate.size[0] + 20 and at[1] - 20 <= y0 <= y1 <= at[1] + 40
        as_pass_1 = round(min(canvas_size) * input_size_of(loaded.model).scale(canvas_size[1], canvas_size[0]))
        assert read_number(detect(loaded, [canvas], input_size=as_pass_1)[0], loaded.reader) == "-1", \
            "a size asked for is the only size read at"
    loaded.model.closer_look = None
    assert read_number(detect(loaded, [canvas])[0], loaded.reader) == "-1", "pass 1 alone misses it"


def test_the_closer_look_grows_a_crop_that_cut_its_number_off():
    """At the closer look's size a 13 px digit is 9 px: its first pass may locate one digit of "1093", and the
    crop round that digit cuts the rest off. The shipped model's closer look grows such a crop (CloserLook.follow)."""
    import dataclasses

    loaded = load_model(None, "cpu")
    look = closer_look_of(loaded.model)
    assert look.follow == 2.0
    canvas = Image.new("RGB", (960, 1280), (255, 255, 255))
    canvas.paste(_plate("1093", 18), (300, 900))
    found = detect(loaded, [canvas])[0]
    assert read_number(found, loaded.reader) == "1093" and found["region"][2] >= 300 + 40, "the whole plate read"
    loaded.model.closer_look = dataclasses.replace(look, follow=0.0)
    cut = detect(loaded, [canvas])[0]
    assert read_number(cut, loaded.reader) != "1093" and cut["region"][2] < 300 + 40, "the crop round the 1 alone"


def test_a_crop_grows_only_towards_the_side_its_number_runs_to():
    from core.predict import grown_crop

    rect, width = (100, 50, 160, 90), 400  # a 60 px wide crop in a 400 px wide image
    digit_h = 20.0
    clear = ([14.0, 6.0, 46.0, 26.0], digit_h)  # 14 px from both sides: more than a quarter of a digit height
    assert grown_crop(rect, clear, width, 2.0) == rect
    assert grown_crop(rect, None, width, 2.0) == rect, "nothing read: nothing to follow"
    runs_right = ([14.0, 6.0, 58.0, 26.0], digit_h)  # its last digit is cut by the crop's right side
    assert grown_crop(rect, runs_right, width, 2.0) == (100, 50, 200, 90), "40 px (2 digit heights) to the right"
    runs_left = ([1.0, 6.0, 40.0, 26.0], digit_h)
    assert grown_crop(rect, runs_left, width, 2.0) == (60, 50, 160, 90)
    both = ([0.0, 6.0, 60.0, 26.0], digit_h)
    assert grown_crop(rect, both, width, 1.5) == (70, 50, 190, 90)
    assert grown_crop((0, 50, 60, 90), both, width, 2.0) == (0, 50, 100, 90), "the image's edge is no crop side"
    assert grown_crop((350, 50, 400, 90), ([0.0, 6.0, 50.0, 26.0], digit_h), width, 2.0) == (310, 50, 400, 90)
    assert grown_crop((10, 50, 70, 90), runs_left, width, 2.0) == (0, 50, 70, 90), "clipped to the image"


def test_joined_file_by_file_predictions_equal_one_call(tiny_run, tiny_data):
    from core.predict import join_predictions, predict_images

    loaded = load_model(f"{tiny_run}/best.pt", "cpu")
    sources = [("door.jpg", open(f"{tiny_data}/test/1.png", "rb").read()), ("bad.png", b"not an image"),
               ("7.png", open(f"{tiny_data}/test/7.png", "rb").read())]
    reader = NumberReader(0.3, 0.1)
    once = predict_images(loaded, sources, reader=reader)
    joined = join_predictions([predict_images(loaded, [source]) for source in sources], reader)
    assert joined.names == once.names and joined.image_ids == once.image_ids == [9, 8, 7]
    assert joined.errors.keys() == once.errors.keys() == {"bad.png"}
    assert joined.numbers == once.numbers and joined.coco() == once.coco()


def test_letters_are_dropped_with_the_digit_boxes_on_a_surer_letter():
    import torch
    boxes = torch.tensor([[0.0, 0, 10, 20], [0.5, 0, 10.5, 20], [20, 0, 30, 20], [20.5, 0, 30, 20], [40, 0, 50, 20]])
    scores = torch.tensor([0.9, 0.6, 0.5, 0.8, 0.7])
    labels = torch.tensor([11, 9, 11, 4, 2])  # letter, "8" on it; letter under a surer "3"; a "1" alone
    kept_boxes, kept_scores, kept_labels = _digits_only(boxes, scores, labels)
    assert kept_labels.tolist() == [4, 2] and kept_scores.tolist() == pytest.approx([0.8, 0.7])
    assert kept_boxes.tolist() == [[20.5, 0, 30, 20], [40, 0, 50, 20]]
    digits_only = _digits_only(boxes[1:2], scores[1:2], labels[1:2])
    assert digits_only[2].tolist() == [9], "a model without letters is read as before"


def test_views_fuse_box_by_box():
    from core.predict import fuse_views

    one = {"boxes": [[0, 0, 10, 20], [30, 0, 40, 20]], "scores": [0.9, 0.6], "digits": [1, 2]}
    assert fuse_views([one], 0.55) == {"boxes": one["boxes"], "scores": one["scores"], "digits": one["digits"]}
    twice = fuse_views([one, copy.deepcopy(one)], 0.55)
    assert twice["boxes"] == one["boxes"] and twice["scores"] == pytest.approx(one["scores"])
    # A digit the other view sees a pixel to the right; a "0" only one view sees (a ring at one size).
    other = {"boxes": [[1, 0, 11, 20], [60, 0, 70, 20]], "scores": [0.3, 0.9], "digits": [1, 0]}
    fused = fuse_views([one, other], 0.55)
    by_digit = {d: (b, s) for b, s, d in zip(fused["boxes"], fused["scores"], fused["digits"])}
    assert by_digit[1][1] == pytest.approx((0.9 + 0.3) / 2)
    assert by_digit[1][0] == pytest.approx([0.25, 0, 10.25, 20]), "boxes weighted by their scores"
    assert by_digit[0][1] == pytest.approx(0.45) and by_digit[2][1] == pytest.approx(0.3), "seen once: half"
    assert fused["scores"] == sorted(fused["scores"], reverse=True)
    # Another digit on the same glyph, or a second box of the same view, starts a cluster of its own.
    same_view = {"boxes": [[0, 0, 10, 20], [0, 1, 10, 21]], "scores": [0.9, 0.8], "digits": [1, 1]}
    assert len(fuse_views([same_view, {"boxes": [[0, 0, 10, 20]], "scores": [0.7], "digits": [7]}], 0.55)["scores"]) \
        == 3
    assert fuse_views([{"boxes": [], "scores": [], "digits": []}] * 3, 0.55) == {"boxes": [], "scores": [],
                                                                                "digits": []}


def test_a_model_with_views_locates_once_and_reads_at_each_view_scale():
    from core.model import RefinePolicy

    loaded = load_model(None, "cpu")
    seen = []
    hook = loaded.model.transform.register_forward_pre_hook(lambda _, args: seen.extend(
        tuple(image.shape[-2:]) for image in args[0]))
    canvas = Image.new("RGB", (640, 480), (255, 255, 255))
    canvas.paste(_plate("274", 26), (40, 300))
    try:
        loaded.model.view_scales = (1.0,)
        detect(loaded, [canvas])
        once = list(seen)
        assert len(once) == 2, "pass 1, then pass 2 on the plate's crop"
        loaded.model.view_scales = (1.0, 1.5)
        seen.clear()
        found = detect(loaded, [canvas])[0]
        assert read_number(found, loaded.reader) == "274"
        assert seen[:2] == once, "located once, at the input size"
        assert seen[2] == pytest.approx((once[1][0] * 1.5, once[1][1] * 1.5), abs=1), "the crop read again at 1.5x"
        loaded.model.refine_policy = RefinePolicy(0.0, 0.2)  # one pass: the whole image is what is read
        seen.clear()
        detect(loaded, [canvas])
        assert seen == [once[0], (round(once[0][0] * 1.5), round(once[0][1] * 1.5))]
    finally:
        hook.remove()


def test_a_crops_views_are_read_in_one_batch_when_the_model_asks_and_what_it_reads_never_depends_on_its_batch():
    loaded = load_model(None, "cpu")
    calls = []
    hook = loaded.model.transform.register_forward_pre_hook(lambda _, args: calls.append(
        sorted(tuple(image.shape[-2:]) for image in args[0])))
    canvas, other = Image.new("RGB", (640, 480), (255, 255, 255)), Image.new("RGB", (300, 200), (250, 250, 245))
    canvas.paste(_plate("274", 26), (40, 300))
    other.paste(_plate("58", 22), (120, 80))
    try:
        loaded.model.view_scales, loaded.model.view_photos = (0.8, 1.0, 1.25), "once"
        apart = detect(loaded, [canvas])[0]
        apart_calls = list(calls)
        loaded.model.crop_views = "batched"
        calls.clear()
        together = detect(loaded, [canvas])[0]
        assert [len(call) for call in apart_calls] == [1, 1, 1, 1], "pass 1, then the crop at each view alone"
        assert calls == [apart_calls[0], sorted(sum(apart_calls[1:], []))], \
            "pass 1, then the crop's three views, at the same sizes, in one batch"
        assert read_number(apart, loaded.reader) == read_number(together, loaded.reader) == "274"
        for batch_size, crops_per_batch in ((8, 2), (3, 1)):  # batch_size counts images at one view
            calls.clear()
            both = detect(loaded, [canvas, canvas.copy(), other], batch_size=batch_size)
            assert max(len(call) for call in calls) == 3 * crops_per_batch
            assert both[0] == both[1], "two copies of one photo, their crops batched together, read the same"
        for found, image in zip(both[1:], (canvas, other)):
            alone = detect(loaded, [image])[0]
            assert found["digits"] == alone["digits"] and found["scores"] == pytest.approx(alone["scores"], abs=1e-4)
        assert read_number(both[2], loaded.reader) == "58"
    finally:
        hook.remove()


def test_a_photo_whose_surest_digit_stands_alone_is_read_whole_at_each_view_when_the_model_asks():
    loaded = load_model(None, "cpu")
    seen = []
    hook = loaded.model.transform.register_forward_pre_hook(lambda _, args: seen.extend(
        tuple(image.shape[-2:]) for image in args[0]))

    def photo(text: str) -> Image.Image:  # 640 px wide: reduced by the policy, so a photo
        canvas = Image.new("RGB", (640, 480), (255, 255, 255))
        canvas.paste(_plate(text, 26), (40, 300))
        return canvas

    def reads(image: Image.Image) -> tuple[str, list]:
        seen.clear()
        number = read_number(detect(loaded, [image])[0], loaded.reader)
        return number, list(seen)

    try:
        loaded.model.view_scales = (1.0, 1.5)
        loaded.model.view_photos = "once"
        lone_once, number_once, crop_once = reads(photo("7")), reads(photo("274")), reads(_plate("7", 26))
        assert lone_once[0] == "7" and number_once[0] == "274" and crop_once[0] == "7"
        assert "read_again" not in detect(loaded, [photo("7")])[0], "read once: nothing to say"
        loaded.model.view_photos = "confirm"
        assert reads(photo("274")) == number_once, "a number of several digits: located once, as before"
        assert reads(_plate("7", 26)) == crop_once, "not a photo (seen at its own size): located once"
        number, sizes = reads(photo("7"))
        assert number == "7", "a real lone digit is found at every view and kept"
        assert sizes[:3] == lone_once[1], "first read as before: pass 1, its crop at 1x and 1.5x"
        pass_1, crop = lone_once[1][0], lone_once[1][1]
        assert sizes[3:5] == [pass_1, crop], "then the whole reading at 1x"
        assert sizes[5] == pytest.approx((pass_1[0] * 1.5, pass_1[1] * 1.5), abs=32), "pass 1 again at 1.5x"
        assert sizes[6] == pytest.approx((crop[0] * 1.5, crop[1] * 1.5), abs=32), "and its own crop at 1.5x"
        assert "stands alone is located and read whole at each view" in loaded.inference_note()
        assert re.fullmatch(r"its lone digit was read again, whole, at 1x, 1\.5x to confirm it: the sizes (agree "
                            r"\(best score [01]\.\d\d\)|are less sure \(best score [01]\.\d\d -> [01]\.\d\d\))",
                            detect(loaded, [photo("7")])[0]["read_again"])
        assert "read_again" not in detect(loaded, [photo("274")])[0]
    finally:
        hook.remove()


def test_a_confirmation_takes_confidence_away_but_never_adds_it():
    from core.predict import _confirmation_note, confirmed

    first = {"boxes": [[10, 10, 20, 30]], "scores": [0.95], "digits": [0], "region": [10, 10, 20, 30]}
    ring_at_one_size = {"boxes": [[10, 10, 20, 30]], "scores": [0.33], "digits": [0], "region": [10, 10, 20, 30]}
    assert confirmed(first, ring_at_one_size) is ring_at_one_size, "seen at one size only: its fused score is kept"
    nothing = {"boxes": [], "scores": [], "digits": [], "region": None}
    assert confirmed(first, nothing) is nothing
    doubtful = {**first, "scores": [0.6]}  # read as nothing by the shipped reader
    clearer = {**first, "scores": [0.86]}  # two other sizes see it clearly
    assert confirmed(doubtful, clearer) is doubtful, "a confirmation never makes a doubtful digit surer"
    views = (1.25, 0.8, 1.0)  # what the page shows of each outcome (detect's read_again)
    assert _confirmation_note(views, first, ring_at_one_size) == (
        "its lone digit was read again, whole, at 0.8x, 1x, 1.25x to confirm it: the sizes are less sure "
        "(best score 0.95 -> 0.33)")
    agreed = _confirmation_note(views, doubtful, confirmed(doubtful, clearer))
    assert agreed.endswith("the sizes agree (best score 0.60)")
    assert _confirmation_note(views, first, {**first}).endswith("the sizes agree (best score 0.95)"), "a tie agrees"


def test_the_region_read_is_around_the_digits_the_reader_reads():
    from core.predict import read_region

    # A sure "0" on a sign outside the crop pass 2 read, and a number with one fainter digit.
    det = {"boxes": [[100, 10, 110, 30], [0, 50, 10, 70], [12, 50, 22, 70]], "digits": [0, 2, 7],
           "scores": [0.95, 0.9, 0.65], "region": [-5, 45, 27, 75]}
    assert read_region(det, NumberReader(0.9, 0.6)) == [100, 10, 110, 30], "the surest digit's line, not the crop"
    det["scores"][0] = 0.5
    assert read_region(det, NumberReader(0.9, 0.6)) == [0, 50, 22, 70]
    assert read_region(det, NumberReader(0.9, 0.7)) == [0, 50, 10, 70], "a slider that drops a digit shrinks it"
    assert read_region(det, NumberReader(0.95, 0.6)) is None


def test_detect_leaves_the_models_mode_as_it_found_it_and_never_switches_an_eval_model(tiny_run, monkeypatch):
    import torch

    loaded = load_model(f"{tiny_run}/best.pt", "cpu")
    image = torch.rand(3, 80, 120)
    switches = []
    real_train = type(loaded.model).train
    monkeypatch.setattr(loaded.model, "train", lambda mode=True: switches.append(mode) or real_train(loaded.model, mode))
    expected = detect(loaded, [image])
    assert switches == [] and not loaded.model.training, "an eval model is read as it is (each switch walks it all)"
    loaded.model.train()
    switches.clear()
    assert detect(loaded.model, [image], device=torch.device("cpu")) == expected, "a training model is read in eval"
    assert loaded.model.training and switches, "and handed back in training mode (core.train validates so)"


def test_a_fixed_input_size_is_flagged_only_where_it_enlarges_past_auto():
    from core.predict import ENLARGED_PAST_AUTO, enlarged_past_auto

    loaded = load_model(None, "cpu")  # the shipped policy: auto keeps a 741x350 close-up at its own size
    close_up, photo = (741, 350), (4032, 3024)
    assert enlarged_past_auto(loaded, close_up, "auto") == enlarged_past_auto(loaded, close_up, None) == 1.0
    assert enlarged_past_auto(loaded, close_up, 800) > ENLARGED_PAST_AUTO, "a number filling a close-up grows"
    assert enlarged_past_auto(loaded, photo, 800) > enlarged_past_auto(loaded, photo, 320)
    assert enlarged_past_auto(loaded, close_up, 128) < 1.0, "a smaller fixed size reduces: nothing to warn of"
