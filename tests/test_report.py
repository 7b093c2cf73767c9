import json
import os

import pandas as pd
import pytest
from PIL import Image

from core.data import ImageRecord, load_split
from core.evaluate import main as evaluate_main
from core.model import input_size_of
from core.predict import NumberReader, load_model
from core.report import REPORT_FILES, build_report, confusion_matrix, match_image, write_report


def _record(image_id, boxes, digits):
    return ImageRecord(image_id, f"/x/{image_id}.png", 200, 100, [list(b) for b in boxes], [d + 1 for d in digits])


def _detection(boxes, digits, scores=None):
    return {"boxes": [list(b) for b in boxes], "digits": list(digits), "scores": scores or [0.9] * len(boxes),
            "region": None}


def test_each_kind_of_error_is_told_apart():
    truth = _record(1, [(0, 0, 10, 20), (12, 0, 22, 20), (24, 0, 34, 20), (36, 0, 46, 20)], [1, 2, 3, 4])
    detection = _detection([(0, 0, 10, 20),        # 1 read right
                            (12, 0, 22, 20),       # 2 read as 7: wrong digit
                            (27, 8, 40, 30),       # 3 with a box off (IoU about 0.2)
                            (100, 0, 110, 20),     # nothing there: extra
                            (36, 0, 46, 20)],      # 4, but under the threshold: missed
                           [1, 7, 3, 5, 4], [0.9, 0.9, 0.9, 0.9, 0.3])
    match = match_image(truth, detection, 0.5)
    assert sorted(match.pairs) == [(1, 1), (2, 7)]
    assert match.box_off == [3] and match.missed == [4] and match.extra == [5]
    assert match.kinds() == ["missed digit", "extra digit", "wrong digit", "box off"]
    assert match.error_count() == 4
    table = confusion_matrix([match])
    assert table.loc["1", "1"] == 1 and table.loc["2", "7"] == 1
    assert table.loc["3", "missed"] == 1 and table.loc["4", "missed"] == 1 and table.loc["extra", "5"] == 1
    assert table.to_numpy().sum() == 5


def test_report_from_one_pass_lists_wrong_numbers_worst_first(tiny_data):
    split = load_split(tiny_data, "valid")
    detections = [_detection(r.boxes, [l - 1 for l in r.labels]) for r in split.records]
    a, b = sorted((i for i, r in enumerate(split.records) if r.boxes), key=lambda i: -len(split.records[i].boxes))[:2]
    detections[b] = _detection([], [])  # every digit missed: the most errors
    detections[a]["digits"][0] = (detections[a]["digits"][0] + 1) % 10  # one digit wrong
    report = build_report(split, detections, NumberReader(0.5, 0.5), seconds=2.0)
    if len(split.records[b].boxes) > 1:
        assert list(report.errors["image_id"]) == [split.records[b].image_id, split.records[a].image_id]
    assert set(report.errors["kinds"]) == {"missed digit", "wrong digit"}
    assert report.errors.loc[0, "errors"] == len(split.records[b].boxes)
    assert report.metrics["task2_accuracy"] == pytest.approx((len(split.records) - 2) / len(split.records))
    assert report.metrics["ms_per_image"] == pytest.approx(2000 / len(split.records), abs=0.01)
    # PR curves come from pycocotools: perfect boxes of a class reach precision 1 at full recall.
    assert report.pr["precision"].max() == pytest.approx(1.0) and set(report.pr["digit"]) <= set("0123456789")
    same = report.sweep[(report.sweep["anchor"] == 0.5) & (report.sweep["member"] == 0.5)]
    assert same["task2_accuracy"].tolist() == [report.metrics["task2_accuracy"]], "the sweep reads as the report does"
    assert report.metrics["task2_reader"] == {"anchor": 0.5, "member": 0.5, "one_line": True}


def test_write_report_writes_every_file(tiny_data, tmp_path):
    split = load_split(tiny_data, "test")
    detections = [_detection(r.boxes, [l - 1 for l in r.labels]) for r in split.records]
    report = build_report(split, detections, 0.5)
    written = write_report(report, str(tmp_path / "report"))
    assert sorted(os.listdir(tmp_path / "report")) == sorted(REPORT_FILES)
    assert all(os.path.getsize(p) > 0 for p in written)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["task2_accuracy"] == 1.0 and metrics["mAP"] == pytest.approx(1.0)
    confusion = pd.read_csv(tmp_path / "report" / "confusion.csv", index_col=0)
    assert confusion.to_numpy().trace() == sum(len(r.boxes) for r in split.records)
    assert pd.read_csv(tmp_path / "report" / "errors.csv").empty
    with Image.open(tmp_path / "report" / "confusion.png") as png:
        assert png.size[0] > 300


def test_evaluate_cli_writes_the_report(tiny_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "report"
    code = evaluate_main(["--ckpt", os.path.join(tiny_run, "best.pt"), "--data", tiny_data, "--split", "valid",
                          "--report", str(out)])
    assert code == 0
    assert "report:" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "valid" and metrics["images"] == 8 and "ms_per_image" in metrics
    errors = pd.read_csv(out / "errors.csv", dtype={"truth": str, "read": str})
    assert len(errors) == round((1 - metrics["task2_accuracy"]) * 8)
    # With --sweep-task2 too, the report's sweep is the one printed and saved, and picks the same reader.
    both, saved = tmp_path / "both", tmp_path / "metrics.json"
    assert evaluate_main(["--ckpt", os.path.join(tiny_run, "best.pt"), "--data", tiny_data, "--split", "valid",
                          "--report", str(both), "--sweep-task2", "--json", str(saved)]) == 0
    printed = json.loads(saved.read_text())
    table = pd.read_csv(both / "task2_sweep.csv")
    columns = ("anchor", "member", "task2_accuracy", "crops_with_number_accuracy")
    assert table.to_dict("records") == [{k: row[k] for k in columns} for row in printed["task2_sweep"]]
    written = json.loads((both / "metrics.json").read_text())
    assert written["task2_best_reader"] == printed["task2_best_reader"]
    assert written["task2_reader_pick"] == printed["task2_reader_pick"]


def test_a_finished_run_holds_the_report_of_its_best_epoch(tiny_run, tiny_data):
    folder = os.path.join(tiny_run, "report")
    assert sorted(os.listdir(folder)) == sorted(REPORT_FILES)
    metrics = json.loads(open(os.path.join(folder, "metrics.json")).read())
    history = json.loads(open(os.path.join(tiny_run, "history.json")).read())
    best = max(history, key=lambda h: h["mAP"])
    assert metrics["split"] == "valid" and metrics["mAP"] == pytest.approx(best["mAP"])
    # The run reads numbers with the reader its validation split picked, and says so in best.pt.
    sweep = pd.read_csv(os.path.join(folder, "task2_sweep.csv")).set_index(["anchor", "member"])
    assert metrics["task2_reader"] == metrics["task2_reader_pick"]
    loaded = load_model(os.path.join(tiny_run, "best.pt"), "cpu")
    picked = NumberReader.from_dict(metrics["task2_reader"])
    assert loaded.reader == picked
    # Every tiny valid image holds a number; the crops (images the model's own size policy does not reduce) pick
    # the crop reader, and photos get the best reader on every image.
    policy = input_size_of(loaded.model)
    crops = sum(policy.scale(r.height, r.width) >= 1.0 for r in load_split(tiny_data, "valid").records)
    assert 0 < metrics["task2_pick_crops"] == crops < metrics["images"]
    crop_accuracy = sweep["crops_with_number_accuracy"]
    assert crop_accuracy[(picked.anchor, picked.member)] == crop_accuracy.max()
    photos = picked.photos or picked
    assert sweep["task2_accuracy"][(photos.anchor, photos.member)] == sweep["task2_accuracy"].max()
    assert loaded.meta["task2_reader_picked_on"] == {"split": "valid", "images": metrics["images"],
                                                     "crops_with_number": crops,
                                                     "task2_accuracy": metrics["task2_accuracy"]}
