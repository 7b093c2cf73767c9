import json
import os
import shutil

import pytest

from core.batches import DigitDataset
from core.data import DatasetError, Problem, categories, check_split, load_split, main as data_main


@pytest.fixture()
def dataset_copy(tmp_path, tiny_data):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    return root


def _edit(root, split, change):
    path = root / f"{split}.json"
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))


def test_loads_the_generated_layout(tiny_data):
    split = load_split(tiny_data, "train")
    assert len(split.records) == 16 and split.dropped == 0
    record = split.records[0]
    assert record.width > 0 and record.height > 0
    assert all(x1 > x0 and y1 > y0 for x0, y0, x1, y1 in record.boxes)
    assert all(1 <= label <= 10 for label in record.labels)
    coco = split.coco()
    assert "info" in coco and len(coco["images"]) == 16


def test_number_reads_boxes_left_to_right(tiny_data):
    record = load_split(tiny_data, "train").records[0]
    record.boxes = [[50, 0, 60, 10], [10, 0, 20, 10], [30, 0, 40, 10]]
    record.labels = [4, 2, 10]  # digits 3, 1, 9
    assert record.number == "193"


BAD_CASES = {
    "missing image file": (lambda c: c["images"][0].update(file_name="nope.png"), "image file missing", 1, None),
    "box outside": (lambda c: c["annotations"][0].update(bbox=[5, 5, 10_000, 10]), "outside", None, 1),
    "zero width": (lambda c: c["annotations"][0].update(bbox=[1, 1, 0, 5]), "zero or negative size", None, 1),
    "negative height": (lambda c: c["annotations"][0].update(bbox=[1, 1, 3, -2]), "zero or negative size", None, 1),
    "unknown category": (lambda c: c["annotations"][0].update(category_id=11), "unknown category_id", None, 1),
    "category zero": (lambda c: c["annotations"][0].update(category_id=0), "unknown category_id", None, 1),
    "duplicate image id": (lambda c: c["images"][1].update(id=c["images"][0]["id"]), "duplicate image id", 1, None),
    "duplicate annotation id": (lambda c: c["annotations"][1].update(id=c["annotations"][0]["id"]),
                                "duplicate annotation id", None, 1),
    "bbox wrong type": (lambda c: c["annotations"][0].update(bbox="1,2,3,4"), "bbox must be", None, 1),
    "image id not int": (lambda c: c["images"][0].update(id="one"), "non-integer id", None, None),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_annotations_are_named(dataset_copy, case):
    change, text, image_id, annotation_id = BAD_CASES[case]
    _edit(dataset_copy, "train", change)
    with pytest.raises(DatasetError) as info:
        load_split(str(dataset_copy), "train")
    problems = [p for p in info.value.problems if text in p.message]
    assert problems, info.value
    assert problems[0].file.endswith("train.json")
    if image_id is not None:
        assert problems[0].image_id == image_id
    if annotation_id is not None:
        assert problems[0].annotation_id == annotation_id
    assert "train.json" in str(info.value) and text in str(info.value)


def test_malformed_json_and_missing_keys(dataset_copy):
    (dataset_copy / "valid.json").write_text('{"images": [1, 2,')
    with pytest.raises(DatasetError, match=r"valid.json: malformed JSON: Expecting value at line 1, column 18"):
        load_split(str(dataset_copy), "valid")
    (dataset_copy / "valid.json").write_text('{"images": [], "annotations": [], "info": "cut off')
    with pytest.raises(DatasetError, match=r"malformed JSON: Unterminated string starting at line 1, column 43"):
        load_split(str(dataset_copy), "valid")
    (dataset_copy / "valid.json").write_text('{"images": []}')
    with pytest.raises(DatasetError, match="missing key 'annotations'"):
        load_split(str(dataset_copy), "valid")
    (dataset_copy / "valid.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(DatasetError, match="no images"):
        load_split(str(dataset_copy), "valid")
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_split(str(dataset_copy / "nowhere"), "valid")
    with pytest.raises(DatasetError, match=rf"train.json: is a file: pass the dataset folder .*, e.g. {dataset_copy}$"):
        load_split(str(dataset_copy / "train.json"), "train")
    with pytest.raises(SystemExit):
        data_main([str(dataset_copy), "--split", "bogus"])
    assert str(Problem(f"{dataset_copy}/", "a folder given with its slash")).startswith(f"{dataset_copy.name}: ")


def test_skip_invalid_drops_and_counts(dataset_copy):
    def damage(coco):
        coco["annotations"][0]["bbox"] = [1, 1, 0, 5]  # image 1
        coco["images"][2]["file_name"] = "missing.png"  # image 3
    _edit(dataset_copy, "train", damage)
    split = load_split(str(dataset_copy), "train", skip_invalid=True)
    assert split.dropped == 2
    assert len(split.records) == 14
    assert {1, 3}.isdisjoint(r.image_id for r in split.records)
    assert len(split.problems) == 2


def test_svhn_style_category_names_are_refused(dataset_copy):
    def svhn(coco):
        coco["categories"] = [{"id": k, "name": str(k % 10)} for k in range(1, 11)]
    _edit(dataset_copy, "train", svhn)
    with pytest.raises(DatasetError, match="category id 1 is named '1'; ids 1..10 must mean digits 0..9"):
        load_split(str(dataset_copy), "train")


def test_truncated_image_and_odd_annotation_ids_are_reported(dataset_copy):
    path = dataset_copy / "train" / "2.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    _edit(dataset_copy, "train", lambda c: c["annotations"][3].update(id=[5]))
    with pytest.raises(DatasetError) as info:
        load_split(str(dataset_copy), "train")
    messages = [(p.image_id, p.message) for p in info.value.problems]
    assert any(image_id == 2 and "unreadable image file" in m for image_id, m in messages)
    assert any("annotation id [5] is not an integer" in m for _, m in messages)


def test_dataset_images_keep_their_stored_orientation(tmp_path):
    from PIL import Image

    from core.images import decode_image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), "red").save(tmp_path / "1.jpg", exif=exif.tobytes())
    assert decode_image(tmp_path / "1.jpg").size == (20, 40)
    assert decode_image(tmp_path / "1.jpg", exif_transpose=False).size == (40, 20)


def test_the_check_warns_about_images_stored_rotated_and_training_still_uses_them(tmp_path, capsys):
    from PIL import ExifTags, Image

    (tmp_path / "train").mkdir()
    images, annotations = [], []
    pictures = [("1.jpg", 6), ("2.png", 8), ("3.jpg", 1), ("4.png", None), ("5.tif", 6)]  # Pillow turns a TIFF
    for image_id, (name, orientation) in enumerate(pictures, 1):
        exif = Image.Exif()
        if orientation is not None:
            exif[ExifTags.Base.Orientation] = orientation
        Image.new("RGB", (40, 20), "red").save(tmp_path / "train" / name, exif=exif.tobytes())
        with Image.open(tmp_path / "train" / name) as written:
            width, height = written.size
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        annotations.append({"id": image_id, "image_id": image_id, "category_id": 3, "bbox": [2, 2, 9, 12]})
    (tmp_path / "train.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                     "categories": categories()}))
    check = check_split(str(tmp_path), "train")
    assert not check.problems and len(check.records) == 5, "a warning drops nothing"
    assert [w.image_id for w in check.warnings] == [1, 2]
    assert data_main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train: 5 usable image(s), 5 digit box(es); no problems" in out
    assert "train.json, image 1: 1.jpg is stored rotated (EXIF orientation 6): its boxes are read against its " \
           "stored 40x20 pixels" in out
    assert "train.json, image 2: 2.png is stored rotated (EXIF orientation 8)" in out
    assert "viewers (and the Detect page) show it turned" in out and "convert its source again with core.convert" in out


def test_declared_letter_boxes_are_targets_but_never_digits(dataset_copy):
    def add_letter(coco):
        coco["categories"].append({"id": 11, "name": "letter"})
        first = coco["images"][0]
        coco["annotations"].append({"id": 10_000, "image_id": first["id"], "category_id": 11,
                                    "bbox": [1, 1, 4, 6], "area": 24, "iscrowd": 0})
    _edit(dataset_copy, "train", add_letter)
    split = load_split(str(dataset_copy), "train")
    record = split.records[0]
    assert record.letters == [[1.0, 1.0, 5.0, 7.0]] and split.has_letters
    assert all(1 <= label <= 10 for label in record.labels), "a letter is no digit of the number"
    assert all(a["category_id"] <= 10 for a in split.coco()["annotations"]), "letters are never scored"
    _, target = DigitDataset([record])[0]
    assert target["labels"].tolist() == record.labels + [11]
    assert target["boxes"][-1].tolist() == [1.0, 1.0, 5.0, 7.0]


def test_an_undeclared_category_11_is_still_refused(dataset_copy):
    def misnamed(coco):
        coco["categories"].append({"id": 11, "name": "10"})
    _edit(dataset_copy, "train", misnamed)
    with pytest.raises(DatasetError, match="category id 11 .* is outside 1..10"):
        load_split(str(dataset_copy), "train")


def test_the_check_command_lists_each_problem_with_its_image_and_says_what_training_will_do(dataset_copy, capsys):
    assert data_main([str(dataset_copy)]) == 0
    out = capsys.readouterr().out
    assert "train: 16 usable image(s)" in out and out.count("; no problems") == 3
    train = json.loads((dataset_copy / "train.json").read_text())
    missing = train["images"][2]
    os.remove(dataset_copy / "train" / missing["file_name"])
    valid = json.loads((dataset_copy / "valid.json").read_text())
    valid["annotations"][0]["category_id"] = 0
    (dataset_copy / "valid.json").write_text(json.dumps(valid))
    assert data_main([str(dataset_copy)]) == 2
    out = capsys.readouterr().out
    assert f"train.json, image {missing['id']}: image file missing" in out
    bad = valid["annotations"][0]
    assert f"valid.json, image {bad['image_id']}, annotation {bad['id']}: unknown category_id 0" in out
    assert out.count("--skip-invalid (core.train, core.evaluate) drops those images") == 2 and "test: 8 usable image(s)" in out
    assert data_main([str(dataset_copy), "--split", "test"]) == 0, "only the split asked for"
    (dataset_copy / "test.json").write_text('{"images": [')
    assert data_main([str(dataset_copy), "--split", "test"]) == 2
    assert "malformed JSON" in capsys.readouterr().out


def test_the_check_command_reads_a_test_folder_without_annotations_as_fine(dataset_copy, capsys):
    os.remove(dataset_copy / "test.json")
    assert data_main([str(dataset_copy)]) == 0
    assert "test: 8 image(s) without test.json: core.predict reads them" in capsys.readouterr().out
    for split in ("train", "valid"):
        os.remove(dataset_copy / f"{split}.json")
    assert data_main([str(dataset_copy)]) == 0, "the course's test/ alone"
    out = capsys.readouterr().out
    assert "test: 8 image(s) without test.json" in out and "train: 16 image(s) without train.json" in out


def test_the_check_command_says_what_a_folder_without_splits_is(tmp_path, capsys):
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "digitStruct.mat").write_bytes(b"MATLAB")
    assert data_main([str(tmp_path / "svhn")]) == 2
    assert "SVHN's format 1" in capsys.readouterr().err
