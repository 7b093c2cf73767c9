import csv
import io
import json
import os

import pytest
from pycocotools.coco import COCO

from core.data import load_split
from core.predict import (assign_image_ids, coco_results, detect, load_model, main as predict_main,
                          padded_input_size, pred_csv_bytes, read_number)


def _det(*items):
    """items: (x0, digit, score) with unit-height boxes 10 px wide."""
    return {"boxes": [[x, 0, x + 10, 20] for x, _, _ in items], "digits": [d for _, d, _ in items],
            "scores": [s for _, _, s in items]}


def test_reads_digits_left_to_right():
    assert read_number(_det((40, 3, 0.9), (0, 1, 0.8), (20, 7, 0.95))) == "173"


def test_no_digit_gives_minus_one():
    assert read_number(_det()) == "-1"
    assert read_number(_det((0, 4, 0.2), (20, 5, 0.3)), threshold=0.5) == "-1"


def test_overlapping_duplicates_of_different_classes_keep_the_best():
    det = _det((0, 1, 0.9), (1, 7, 0.6), (20, 2, 0.8), (21, 2, 0.55))
    assert read_number(det) == "12"
    # A small box inside a bigger one (a "1" found inside a "4") is the same glyph.
    det = {"boxes": [[0, 0, 12, 20], [4, 2, 9, 18], [15, 0, 27, 20]], "digits": [4, 1, 5], "scores": [0.9, 0.7, 0.9]}
    assert read_number(det) == "45"


def test_threshold_filters_low_scores():
    det = _det((0, 1, 0.9), (20, 8, 0.4))
    assert read_number(det, threshold=0.5) == "1"
    assert read_number(det, threshold=0.3) == "18"


def test_coco_results_use_xywh_and_category_plus_one():
    [entry] = coco_results(7, {"boxes": [[10.0, 5.0, 30.0, 45.0]], "scores": [0.5], "digits": [0]})
    assert entry == {"image_id": 7, "bbox": [10.0, 5.0, 20.0, 40.0], "score": 0.5, "category_id": 1}


def test_csv_sorted_with_header():
    text = pred_csv_bytes([(10, "12"), (2, "-1"), (3, "7")]).decode()
    assert text == "image_id,pred_label\n2,-1\n3,7\n10,12\n"


def test_image_ids_from_file_names():
    assert assign_image_ids(["3.png", "10.png", "1.jpg"]) == [3, 10, 1]
    assert assign_image_ids(["5.png", "photo.jpg", "a.png"]) == [5, 6, 7]


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
    assert assign_image_ids(["².png", "7.png", "1" * 40 + ".png"]) == [8, 7, 9]


def test_a_zero_task2_threshold_is_respected(tiny_run, tmp_path):
    from core.checkpoint import CheckpointError, export

    export(f"{tiny_run}/best.pt", str(tmp_path / "zero.pt"), task2_threshold=0.0)
    assert load_model(str(tmp_path / "zero.pt"), "cpu").task2_threshold == 0.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        export(f"{tiny_run}/best.pt", str(tmp_path / "bad.pt"), task2_threshold=50)
    import torch

    payload = torch.load(tmp_path / "zero.pt", weights_only=True)
    payload["task2_threshold"] = 50
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="task2_threshold 50"):
        load_model(str(tmp_path / "tampered.pt"), "cpu")


def test_padded_input_size_matches_the_model_transform():
    import torch

    loaded = load_model(None, "cpu")  # the shipped model: short side 112, long side <= 400
    for height, width in [(30, 29), (19, 30), (91, 171), (225, 450), (1, 1), (40, 5000), (5000, 40)]:
        batch, _ = loaded.model.transform([torch.zeros(3, height, width)])
        assert padded_input_size(loaded.model, height, width) == tuple(batch.tensors.shape[-2:]), (height, width)


def test_an_images_detections_do_not_depend_on_its_batch(tiny_data):
    from core.images import decode_image

    loaded = load_model(None, "cpu")
    images = [decode_image(os.path.join(tiny_data, "test", f"{i}.png")) for i in range(1, 9)]
    assert len({padded_input_size(loaded.model, im.height, im.width) for im in images}) > 1, "needs mixed sizes"
    alone = [detect(loaded, [image])[0] for image in images]
    for batched in (detect(loaded, images, batch_size=8), detect(loaded, images[::-1], batch_size=3)[::-1]):
        for one, other in zip(alone, batched):
            assert len(one["scores"]) == len(other["scores"])
            assert one["digits"] == other["digits"]
            assert one["scores"] == pytest.approx(other["scores"], abs=1e-4)
            assert sum(one["boxes"], []) == pytest.approx(sum(other["boxes"], []), abs=1e-2)
