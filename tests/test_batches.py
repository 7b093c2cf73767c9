import torch

from core.batches import DigitDataset, epoch_batches, epoch_subset, train_transforms
from core.data import ImageRecord, load_split
from core.model import InputSize


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
