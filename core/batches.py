"""Training batches: augmentation, the torch ``Dataset`` over a split's records, and each epoch's fresh
subset cut into batches of similar input size.

Kept apart from ``core.data`` (reading and validating the course layout), which needs no torch: converting
or browsing a dataset does not load it.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from core.data import LETTER_ID, DatasetError, ImageRecord, Problem


def train_transforms() -> v2.Compose:
    """Colour, contrast, greyscale and small geometric jitter; never flips (digits are not mirror-symmetric)."""
    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomGrayscale(p=0.1),
        v2.RandomInvert(p=0.1),
        v2.RandomApply([v2.RandomAffine(degrees=4, translate=(0.04, 0.04), scale=(0.85, 1.1), shear=(-6, 6, -2, 2))],
                       p=0.4),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0),
    ])


class DigitDataset(torch.utils.data.Dataset):
    """(image float tensor CHW in [0, 1], target dict with xyxy ``boxes``, ``labels``, ``image_id``);
    a record's letters are targets of label ``LETTER_ID``."""

    def __init__(self, records: Sequence[ImageRecord], transforms: Callable | None = None):
        self.records = list(records)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.records)

    def aspect_ratios(self) -> list[float]:
        return [r.width / max(r.height, 1) for r in self.records]

    def batch_keys(self, input_size: Callable[[int, int], tuple[int, int]]) -> list[tuple[int, float]]:
        """Sort keys that put images the model sees at similar sizes into one batch: a scene at
        512 px and a crop at 128 px padded to one batch would cost four times the pixels.
        ``input_size(height, width)`` gives the model's padded input size."""
        keys = []
        for r in self.records:
            h, w = input_size(r.height, r.width)
            keys.append((round(math.log2(h * w) * 2), r.width / max(r.height, 1)))
        return keys

    def __getitem__(self, index: int):
        record = self.records[index]
        try:
            with Image.open(record.path) as handle:
                image = F.pil_to_tensor(handle.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as exc:
            raise DatasetError([Problem(record.path, f"cannot decode ({type(exc).__name__}: {exc})",
                                        record.image_id)], "an image became unreadable during training") from None
        height, width = image.shape[-2:]
        boxes = torch.tensor(record.boxes + record.letters, dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor(record.labels + [LETTER_ID] * len(record.letters), dtype=torch.int64),
            "image_id": record.image_id,
        }
        image = tv_tensors.Image(image)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return F.to_dtype(image, torch.float32, scale=True).as_subclass(torch.Tensor), {
            "boxes": target["boxes"].as_subclass(torch.Tensor),
            "labels": target["labels"],
            "image_id": target["image_id"],
        }


def collate(batch):
    return tuple(zip(*batch))


# ------------------------------------------------------------------ sampling


def epoch_subset(num_images: int, fraction: float, seed: int, epoch: int) -> list[int]:
    """A fresh random subset for ``epoch``: the same on every process and after a resume."""
    count = max(1, int(round(num_images * fraction)))
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_images, generator=generator)[:count].tolist()


def epoch_batches(sort_keys: Sequence[Any], fraction: float, batch_size: int, seed: int, epoch: int,
                  rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """This process's batches for ``epoch``.

    The subset is shuffled, cut into pools of 16 batches, and each pool is ordered by
    ``sort_keys`` (aspect ratio, or input size then aspect ratio: ``DigitDataset.batch_keys``)
    before batching, so a batch pads little (house numbers range from square to 8:1, images
    from crops to photos) while batches stay random. Ranks take every world_size-th batch; the list is padded
    so every rank runs the same number of steps (DDP needs that).
    """
    subset = epoch_subset(len(sort_keys), fraction, seed, epoch)
    rng = random.Random(seed * 7_919 + epoch)
    pool = batch_size * 16
    batches = []
    for start in range(0, len(subset), pool):
        chunk = sorted(subset[start:start + pool], key=lambda i: sort_keys[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    if world_size > 1:
        # Cycle through the batches (there may be fewer than ranks) so every rank gets as many.
        per_rank = math.ceil(len(batches) / world_size)
        batches = [batches[i % len(batches)] for i in range(per_rank * world_size)][rank::world_size]
    return batches
