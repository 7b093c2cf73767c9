import json
import shutil

import pytest

from core import browse
from core.data import DatasetError, load_split


def test_tables_agree_with_the_validated_split(tiny_data):
    assert browse.find_splits(tiny_data) == ["train", "valid", "test"]
    for split in ("train", "test"):
        table = browse.read_split_table(tiny_data, split)
        records = load_split(tiny_data, split).records
        assert list(table.images["image_id"]) == [r.image_id for r in records]
        assert list(table.images["number"]) == [r.number for r in records]
        assert list(table.images["digits"]) == [len(r.boxes) for r in records]
        assert len(table.boxes) == sum(len(r.boxes) for r in records)
        first = records[0]
        assert sorted(table.boxes_of(first.image_id)["digit"]) == sorted(l - 1 for l in first.labels)


def test_filters_by_digit_and_number_length_and_pages(tiny_data):
    table = browse.read_split_table(tiny_data, "train")
    for digit in range(10):
        chosen = browse.select_images(table, digit=digit)
        assert all(str(digit) in n for n in chosen["number"])
        assert len(chosen) == sum(str(digit) in n for n in table.images["number"] if n != "-1")
    two = browse.select_images(table, length=2)
    assert set(two["number"].str.len()) <= {2}
    assert len(browse.page_of(table.images, 1, 5)) == 5
    assert list(browse.page_of(table.images, 99, 5)["image_id"]) == list(table.images["image_id"].iloc[15:20])


def test_a_split_that_is_not_coco_is_refused_by_name(tiny_data, tmp_path):
    root = tmp_path / "odd"
    shutil.copytree(tiny_data, root)
    (root / "valid.json").write_text(json.dumps({"images": "nope"}))
    with pytest.raises(DatasetError, match="valid.json: expected a COCO object"):
        browse.read_split_table(str(root), "valid")
    coco = json.loads((root / "test.json").read_text())
    coco["annotations"][0]["category_id"] = 11
    (root / "test.json").write_text(json.dumps(coco))
    first = coco["annotations"][0]
    table = browse.read_split_table(str(root), "test")  # the other images can still be looked at
    assert [str(p) for p in table.left_out] == [
        f"test.json, image {first['image_id']}, annotation {first['id']}: category_id 11 is outside 1..10 (digits "
        "0..9): left out of these tables"]
    assert len(table.boxes) == len(coco["annotations"]) - 1 and len(table.images) == len(coco["images"])
    (tmp_path / "raw-images").mkdir()
    assert browse.find_datasets(str(tmp_path)) == [str(root), str(tmp_path / "raw-images")], "datasets first"
    assert browse.find_splits(str(tmp_path / "missing")) == []


def test_a_folder_that_is_not_a_dataset_gets_a_next_step(tiny_data, tmp_path):
    svhn = tmp_path / "svhn-train"
    svhn.mkdir()
    (svhn / "digitStruct.mat").write_bytes(b"")
    assert "python -m core.convert svhn --src svhn-train" in browse.why_not_a_dataset("svhn-train", str(svhn))
    train = f"{tiny_data}/train"
    assert f"open its parent, `{tiny_data}`" in browse.why_not_a_dataset(train, train)
    assert "is not a folder" in browse.why_not_a_dataset("nowhere", str(tmp_path / "nowhere"))
    assert "holds no split" in browse.why_not_a_dataset("empty", str(tmp_path))


def test_a_letter_boxed_dataset_browses_its_digits(tmp_path, fonts):
    from core import synth
    synth.generate_dataset(tmp_path / "l", {"train": 20}, seed=2, fonts=fonts, letter_boxes=True,
                           negatives=synth.Negatives(words_alone=0.3, letters_beside=0.8))
    coco = json.loads((tmp_path / "l" / "train.json").read_text())
    assert any(a["category_id"] == 11 for a in coco["annotations"])
    table = browse.read_split_table(str(tmp_path / "l"), "train")
    records = load_split(str(tmp_path / "l"), "train").records
    assert list(table.images["number"]) == [r.number for r in records], "letters are no digits of the number"
    assert len(table.boxes) == sum(len(r.boxes) for r in records) and table.boxes["digit"].between(0, 9).all()
    letter_boxes = [(a["image_id"], *a["bbox"]) for a in coco["annotations"] if a["category_id"] == 11]
    assert sorted(map(tuple, table.letters.itertuples(index=False))) == sorted(letter_boxes)
    first = letter_boxes[0][0]
    assert len(table.letters_of(first)) == sum(b[0] == first for b in letter_boxes)


def test_a_dataset_without_letters_has_an_empty_letter_table(tiny_data):
    table = browse.read_split_table(str(tiny_data), "train")
    assert len(table.boxes) and table.letters.empty and list(table.letters.columns) == ["image_id", "x", "y", "w", "h"]
