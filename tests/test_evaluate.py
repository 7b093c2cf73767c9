import json
from dataclasses import replace

import pytest

from core.data import load_split
from core.evaluate import STAT_NAMES, coco_metrics, main as evaluate_main, task2_accuracy
from core.predict import NumberReader


def _perfect(coco):
    return [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.99, "category_id": a["category_id"]}
            for a in coco["annotations"]]


def test_predictions_equal_to_ground_truth_score_one(tiny_data):
    coco = load_split(tiny_data, "valid").coco()
    metrics = coco_metrics(coco, _perfect(coco))
    assert metrics["mAP"] == pytest.approx(1.0)
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(1.0)
    present = {str(a["category_id"] - 1) for a in coco["annotations"]}
    for digit, ap in metrics["per_class_AP"].items():
        assert ap == (pytest.approx(1.0) if digit in present else None)
    assert set(STAT_NAMES) <= set(metrics)


def test_no_predictions_score_zero_without_crashing(tiny_data):
    coco = load_split(tiny_data, "valid").coco()
    metrics = coco_metrics(coco, [])
    assert metrics["mAP"] == 0.0 and metrics["AP50"] == 0.0 and metrics["detections"] == 0


def test_wrong_class_and_shifted_boxes_lower_the_score(tiny_data):
    coco = load_split(tiny_data, "valid").coco()
    wrong = [dict(r, category_id=r["category_id"] % 10 + 1) for r in _perfect(coco)]
    assert coco_metrics(coco, wrong)["mAP"] == 0.0
    shifted = [dict(r, bbox=[r["bbox"][0] + r["bbox"][2] * 0.3] + r["bbox"][1:]) for r in _perfect(coco)]
    score = coco_metrics(coco, shifted)["mAP"]
    assert 0.0 < score < 0.8


def test_task2_accuracy(tiny_data):
    records = load_split(tiny_data, "valid").records
    truth = [r.number for r in records]
    assert task2_accuracy(records, truth) == 1.0
    assert task2_accuracy(records, ["-1"] * len(records)) == 0.0
    half = truth[: len(truth) // 2] + ["-1"] * (len(truth) - len(truth) // 2)
    assert task2_accuracy(records, half) == pytest.approx(0.5)


def test_cli_reports_and_writes_json(tiny_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert evaluate_main(["--ckpt", f"{tiny_run}/best.pt", "--data", tiny_data, "--split", "test",
                          "--json", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "AP @[.5:.95]" in text and "per-class AP" in text and "Task 2" in text
    metrics = json.loads(out.read_text())
    assert metrics["split"] == "test" and metrics["images"] == 8
    assert 0.0 <= metrics["mAP"] <= 1.0 and 0.0 <= metrics["task2_accuracy"] <= 1.0
    assert evaluate_main(["--ckpt", f"{tiny_run}/best.pt", "--data", str(tmp_path / "none")]) == 2


def test_cli_sweep_reports_the_best_reader_and_matches_a_plain_run(tiny_run, tiny_data, tmp_path, capsys):
    from core.evaluate import SWEEP_READERS

    plain, swept = tmp_path / "plain.json", tmp_path / "swept.json"
    common = ["--ckpt", f"{tiny_run}/best.pt", "--data", tiny_data, "--device", "cpu", "--task2-reader", "0.3"]
    assert evaluate_main(common + ["--json", str(plain)]) == 0
    assert evaluate_main(common + ["--json", str(swept), "--sweep-task2"]) == 0
    said = capsys.readouterr().out
    assert "best Task 2 reader on valid" in said
    pick = NumberReader.from_dict(json.loads(swept.read_text())["task2_reader_pick"])
    assert f"record it with python -m core.checkpoint export {tiny_run}/best.pt OUT.pt --task2-reader " \
           f"{pick.anchor:.2f},{pick.member:.2f}" in said, "the export hint names the checkpoint scored"
    plain, swept = json.loads(plain.read_text()), json.loads(swept.read_text())
    assert swept["mAP"] == plain["mAP"] and swept["task2_accuracy"] == plain["task2_accuracy"]
    assert len(swept["task2_sweep"]) == len(SWEEP_READERS)
    by_reader = {(row["anchor"], row["member"]): row["task2_accuracy"] for row in swept["task2_sweep"]}
    assert by_reader[(0.3, 0.3)] == plain["task2_accuracy"]
    best = swept["task2_best_reader"]
    assert by_reader[(best["anchor"], best["member"])] == max(by_reader.values())
    assert evaluate_main(common + ["--task2-gap", "0.2", "--sweep-task2"]) == 0
    assert "the reader in use also has gap 0.20, which --task2-reader A,M would not keep" in capsys.readouterr().out


def _line(number, scores):
    return {"boxes": [[10.0 * i, 0, 10.0 * i + 8, 20] for i in range(len(number))],
            "digits": [int(c) for c in number], "scores": list(scores)}


def test_task2_sweep_reads_each_reader_from_the_same_detections(tiny_data):
    from core.evaluate import task2_sweep

    records = [r for r in load_split(tiny_data, "valid").records if len(r.number) > 1][:2]
    first, second = (r.number for r in records)
    detections = [_line(first, [0.9] * len(first)), _line(second, [0.95] + [0.4] * (len(second) - 1))]
    readers = [NumberReader(0.3, 0.3), NumberReader(0.5, 0.5), NumberReader(0.9, 0.3), NumberReader(0.95, 0.95)]
    assert task2_sweep(records, detections, readers) == dict(zip(readers, [1.0, 0.5, 1.0, 0.0]))


def test_best_reader_breaks_ties_by_a_rule_fixed_in_advance():
    from core.evaluate import best_reader

    tied = {NumberReader(0.8, 0.3): 0.7, NumberReader(0.55, 0.3): 0.7, NumberReader(0.55, 0.5): 0.7,
            NumberReader(0.9, 0.9): 0.6}
    assert best_reader(tied) == NumberReader(0.55, 0.5)
    assert best_reader({**tied, NumberReader(0.9, 0.9): 0.71}) == NumberReader(0.9, 0.9)


def test_crops_pick_their_reader_on_crops_that_hold_a_number_and_photos_on_every_image():
    from core.data import ImageRecord
    from core.evaluate import reader_sweeps

    def record(number):
        return ImageRecord(1, "x.png", 100, 40, [[10.0 * i, 0, 10.0 * i + 8, 20] for i in range(len(number))],
                           [int(c) + 1 for c in number])

    def empty(strays, photo):  # an image with no digit in it, where the model found strays at 0.6
        return record(""), {**_line(strays, [0.6] * len(strays)), "photo": photo}

    faint = [(record("42"), {**_line("42", [0.6, 0.55]), "photo": False})] * 3  # real numbers, scored low
    sure = [(record("17"), {**_line("17", [0.95, 0.9]), "photo": False})]
    photos = [(record("85"), {**_line("85", [0.95, 0.9]), "photo": True})] + [empty("7", True)] * 4
    readers = [NumberReader(0.5, 0.5), NumberReader(0.9, 0.9)]

    def pick(pairs):
        records, detections = [r for r, _ in pairs], [d for _, d in pairs]
        sweeps = reader_sweeps(records, detections)
        cut = replace(sweeps, everything={r: sweeps.everything[r] for r in readers},  # the grid cut to two readers
                      crops=None if sweeps.crops is None else {r: sweeps.crops[r] for r in readers})
        return cut.pick()

    # On every image the strict reader wins (4 walls read nothing); the crops holding a number want the low one.
    assert pick(faint + sure + photos) == NumberReader(0.5, 0.5, photos=NumberReader(0.9, 0.9))
    # Digit-free crops do not push the crop scores up: a crop is a picture of a number.
    crops_only = faint + sure + [empty("3", False)] * 5
    assert pick(crops_only) == NumberReader(0.5, 0.5), "no photo: one reader, picked on the crops with a number"
    assert pick(photos) == NumberReader(0.9, 0.9), "no crop with a number: the best on every image"
    assert pick(faint + photos[:1]) == NumberReader(0.5, 0.5), "both agree: one reader"
    records, detections = zip(*(faint + sure + photos + [empty("3", False)]))
    sweeps = reader_sweeps(records, detections)
    assert (sweeps.crop_count, sweeps.has_photos) == (4, True), \
        "digit-free crops and photos are not crops with a number"
    assert not reader_sweeps(records[:4], detections[:4]).has_photos


def test_cli_stops_on_a_bad_dataset_naming_the_problem(tiny_run, tiny_data, tmp_path, capsys):
    import shutil

    shutil.copytree(tiny_data, tmp_path / "d")
    coco = json.loads((tmp_path / "d" / "valid.json").read_text())
    coco["annotations"][0]["category_id"] = 42
    (tmp_path / "d" / "valid.json").write_text(json.dumps(coco))
    assert evaluate_main(["--ckpt", f"{tiny_run}/best.pt", "--data", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "valid.json" in err and "annotation" in err and "unknown category_id 42" in err


def test_cli_skip_invalid_scores_the_other_images_as_a_split_without_them(tiny_run, tiny_data, tmp_path, capsys):
    import shutil

    broken, without = tmp_path / "broken", tmp_path / "without"
    shutil.copytree(tiny_data, broken)
    shutil.copytree(tiny_data, without)
    coco = json.loads((broken / "test.json").read_text())
    bad = coco["images"][:2]
    (broken / "test" / bad[0]["file_name"]).write_text("not a picture")
    (broken / "test" / bad[1]["file_name"]).write_bytes((broken / "test" / bad[1]["file_name"]).read_bytes()[:60])
    kept = {"images": coco["images"][2:], "annotations": [a for a in coco["annotations"]
                                                          if a["image_id"] not in {b["id"] for b in bad}],
            "categories": coco["categories"]}
    (without / "test.json").write_text(json.dumps(kept))
    args = ["--ckpt", f"{tiny_run}/best.pt", "--split", "test", "--device", "cpu"]
    assert evaluate_main([*args, "--data", str(broken)]) == 2, "without the flag the split is refused"
    assert "core.evaluate: --skip-invalid scores the other images" in capsys.readouterr().err
    assert evaluate_main([*args, "--data", str(broken), "--skip-invalid", "--json", str(tmp_path / "b.json")]) == 0
    captured = capsys.readouterr()
    assert "2 image(s) with problems are not scored" in captured.err
    assert all(b["file_name"] in captured.err for b in bad)
    assert "(2 more not scored: --skip-invalid dropped them)" in captured.out
    assert evaluate_main([*args, "--data", str(without), "--json", str(tmp_path / "w.json")]) == 0
    skipped, reference = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("b", "w"))
    assert skipped["images"] == reference["images"] == len(coco["images"]) - 2 and skipped["skipped_images"] == 2
    assert (skipped["mAP"], skipped["task2_accuracy"]) == (reference["mAP"], reference["task2_accuracy"])


def test_cli_scores_a_split_with_warnings_and_lists_them(tiny_run, tiny_data, tmp_path, capsys):
    import shutil

    from conftest import tag_rotated

    data = tmp_path / "d"
    shutil.copytree(tiny_data, data)
    first = json.loads((data / "test.json").read_text())["images"][0]
    tag_rotated(data / "test" / first["file_name"])
    assert evaluate_main(["--ckpt", f"{tiny_run}/best.pt", "--data", str(data), "--split", "test"]) == 0
    err = capsys.readouterr().err
    assert "1 warning(s) about test, scored as it is" in err
    assert f"image {first['id']}: {first['file_name']} is stored rotated (EXIF orientation 6)" in err


def test_cli_refuses_output_paths_it_cannot_write_before_scoring(tiny_run, tiny_data, tmp_path, capsys,
                                                                  monkeypatch):
    import core.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "detect_split", lambda *a, **k: pytest.fail("scored before the check"))
    (tmp_path / "afile").write_text("x")
    args = ["--ckpt", f"{tiny_run}/best.pt", "--data", tiny_data, "--split", "test"]
    assert evaluate_main([*args, "--report", str(tmp_path / "afile")]) == 2
    assert "--report" in capsys.readouterr().err and (tmp_path / "afile").read_text() == "x"
    assert evaluate_main([*args, "--json", str(tmp_path / "afile" / "m.json")]) == 2
    assert f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    assert evaluate_main([*args, "--json", str(tmp_path)]) == 2
    assert "is a folder: name the file to write" in capsys.readouterr().err


def test_cli_on_raw_svhn_says_to_convert_it_first(tiny_run, tmp_path, capsys):
    from core.convert import write_svhn_mat

    write_svhn_mat(str(tmp_path / "digitStruct.mat"), [("1.png", [(1, 5, 2, 8, 12)])])
    assert evaluate_main(["--ckpt", f"{tiny_run}/best.pt", "--data", str(tmp_path), "--split", "train"]) == 2
    err = capsys.readouterr().err
    assert "image folder train/ not found" in err
    assert f"is SVHN's format 1 (digitStruct.mat), not the course layout: convert it first with python -m " \
           f"core.convert svhn --src {tmp_path}" in err
