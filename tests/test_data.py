import json
import os
import shutil

import pytest
import torch
from torchvision.transforms import v2

from core.data import (DatasetError, DigitDataset, epoch_batches, epoch_subset, load_split, train_transforms)


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
    with pytest.raises(DatasetError, match=r"valid.json: malformed JSON at line 1"):
        load_split(str(dataset_copy), "valid")
    (dataset_copy / "valid.json").write_text('{"images": []}')
    with pytest.raises(DatasetError, match="missing key 'annotations'"):
        load_split(str(dataset_copy), "valid")
    (dataset_copy / "valid.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(DatasetError, match="no images"):
        load_split(str(dataset_copy), "valid")
    with pytest.raises(DatasetError, match="dataset folder not found"):
        load_split(str(dataset_copy / "nowhere"), "valid")


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


def test_dataset_items_and_augmentation_never_flip(tiny_data):
    names = [type(t).__name__ for t in train_transforms().transforms]
    assert not any("Flip" in n for n in names)
    split = load_split(tiny_data, "train")
    ds = DigitDataset(split.records, train_transforms())
    torch.manual_seed(0)
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
        h, w = image.shape[-2:]
        boxes = target["boxes"]
        assert boxes.ndim == 2 and boxes.shape[1] == 4
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        # Left-to-right order of the digits survives augmentation (no mirror image).
        if len(boxes) > 1:
            kept_labels = target["labels"].tolist()
            original = [label for _, label in sorted(zip(split.records[i].boxes, split.records[i].labels))]
            centres = ((boxes[:, 0] + boxes[:, 2]) / 2).tolist()
            ordered = [label for _, label in sorted(zip(centres, kept_labels))]
            if len(kept_labels) == len(original):
                assert ordered == original
    plain = DigitDataset(split.records)
    image, target = plain[0]
    assert torch.allclose(target["boxes"], torch.tensor(split.records[0].boxes))


def test_epoch_subsets_are_fresh_each_epoch_and_reproducible():
    a = epoch_subset(1000, 0.1, seed=0, epoch=1)
    assert len(a) == 100 and len(set(a)) == 100
    assert a == epoch_subset(1000, 0.1, seed=0, epoch=1)
    assert set(a) != set(epoch_subset(1000, 0.1, seed=0, epoch=2))
    assert set(a) != set(epoch_subset(1000, 0.1, seed=1, epoch=1))


def test_epoch_batches_group_by_aspect_and_shard_across_ranks():
    aspects = [1 + (i % 7) for i in range(400)]
    whole = epoch_batches(aspects, 0.5, 4, seed=0, epoch=3)
    assert sorted(i for b in whole for i in b) == sorted(epoch_subset(400, 0.5, 0, 3))
    spread = [max(aspects[i] for i in b) - min(aspects[i] for i in b) for b in whole]
    assert sum(spread) / len(spread) < 1.0, "batches hold similar aspect ratios"
    ranks = [epoch_batches(aspects, 0.5, 4, seed=0, epoch=3, rank=r, world_size=3) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1, "every rank runs the same number of steps"
    covered = {i for r in ranks for b in r for i in b}
    assert covered == set(epoch_subset(400, 0.5, 0, 3))


def test_crops_and_photos_do_not_share_a_batch():
    """A 512 px photo padded into a batch of 128 px crops would multiply the batch's pixels."""
    from core.data import ImageRecord
    from core.model import InputSize

    policy = InputSize("auto", 128, 384, 512)
    sizes = [(40, 90), (400, 900), (60, 80), (900, 1200)] * 50  # (height, width): crops and photos of one shape
    dataset = DigitDataset([ImageRecord(i, f"{i}.png", w, h) for i, (h, w) in enumerate(sizes)])
    keys = dataset.batch_keys(lambda h, w: policy.padded_size(h, w))
    batches = epoch_batches(keys, 1.0, 8, seed=0, epoch=1)
    areas = [[h * w for h, w in (policy.padded_size(*sizes[i]) for i in batch)] for batch in batches]
    mixed = sum(max(a) > 2 * min(a) for a in areas)
    assert mixed <= 2, f"{mixed} of {len(batches)} batches mix small and large inputs"  # at most a pool's seams


def test_fewer_batches_than_ranks_still_gives_every_rank_a_step():
    aspects = [1.0] * 12
    ranks = [epoch_batches(aspects, 1.0, 4, seed=0, epoch=1, rank=r, world_size=8) for r in range(8)]
    assert all(len(r) == 1 for r in ranks)


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
