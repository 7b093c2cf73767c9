import hashlib
import json
import os

import numpy as np
import pytest

from core import synth


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name == "synth.json":
                continue  # holds timings
            with open(os.path.join(dirpath, name), "rb") as handle:
                h.update(name.encode() + handle.read())
    return h.hexdigest()


def test_same_seed_same_dataset_and_worker_count_does_not_matter(tmp_path, fonts):
    counts = {"train": 12, "valid": 4, "test": 4}
    synth.generate_dataset(tmp_path / "a", counts, seed=5, fonts=fonts)
    synth.generate_dataset(tmp_path / "b", counts, seed=5, fonts=fonts, workers=2)
    synth.generate_dataset(tmp_path / "c", counts, seed=6, fonts=fonts)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_layout_and_coco_format(tiny_data):
    for split, count in (("train", 16), ("valid", 8), ("test", 8)):
        coco = json.load(open(os.path.join(tiny_data, f"{split}.json")))
        assert [img["id"] for img in coco["images"]] == list(range(1, count + 1))
        assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
        assert [c["name"] for c in coco["categories"]] == [str(d) for d in range(10)]
        assert "info" in coco
        for img in coco["images"]:
            assert os.path.isfile(os.path.join(tiny_data, split, img["file_name"]))
            assert img["file_name"] == f"{img['id']}.png"
        per_image = {}
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            img = coco["images"][ann["image_id"] - 1]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= img["width"] and y + h <= img["height"]
            assert 1 <= ann["category_id"] <= 10
            per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
        assert set(per_image) == set(range(1, count + 1)), "every image has at least one digit"
        assert max(per_image.values()) <= 5


def test_image_sizes_span_the_course_range(fonts):
    widths = [synth.generate_sample(0, "train", i, fonts)[0].size[0] for i in range(1, 150)]
    assert min(widths) >= synth.MIN_WIDTH and max(widths) <= synth.MAX_WIDTH
    assert min(widths) < 60 and max(widths) > 250


@pytest.mark.parametrize("index", range(1, 61))
def test_boxes_are_tight_around_each_glyphs_ink(fonts, index):
    rng, np_rng = synth.sample_rngs(11, "train", index)
    debug = {}
    image, boxes = synth.render_sample(rng, fonts, np_rng, debug=debug)
    glyphs = np.asarray(debug["glyph_map"])
    assert glyphs.shape == (image.size[1], image.size[0])
    extents = []
    for k in range(1, int(glyphs.max()) + 1):
        ys, xs = np.nonzero(glyphs == k)
        if len(xs):
            extents.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    assert len(boxes) == len(extents)
    for x, y, w, h, _ in boxes:
        # Each box matches one glyph's ink extent within a pixel (resampling rounds)...
        best = min(extents, key=lambda e: abs(e[0] - x) + abs(e[1] - y) + abs(e[2] - x - w) + abs(e[3] - y - h))
        assert max(abs(best[0] - x), abs(best[1] - y), abs(best[2] - (x + w)), abs(best[3] - (y + h))) <= 1
    # ...and no glyph ink lies outside every box.
    inside = np.zeros_like(glyphs, dtype=bool)
    for x, y, w, h, _ in boxes:
        inside[max(0, y - 1):y + h + 1, max(0, x - 1):x + w + 1] = True
    assert not ((glyphs > 0) & ~inside).any()


def test_digit_counts_and_first_digits_look_like_house_numbers(fonts):
    lengths, digits = [], []
    for i in range(1, 300):
        _, boxes = synth.generate_sample(2, "train", i, fonts)
        lengths.append(len(boxes))
        digits += [b[4] for b in boxes]
    assert set(lengths) == {1, 2, 3, 4, 5}
    assert set(digits) == set(range(10))


def test_fonts_cover_system_builtin_and_strokes(fonts):
    assert synth.BUILTIN_FONT in fonts and synth.STROKE_FONT in fonts
    assert all(f in fonts for f in fonts if not f.startswith("<")), "system fonts come first"
    # Each source draws every digit.
    import random

    for source in (synth.BUILTIN_FONT, synth.STROKE_FONT, fonts[0]):
        for d in range(10):
            mask = (synth._stroke_glyph(random.Random(0), d, 40, 0.6, 0.12) if source == synth.STROKE_FONT
                    else synth._font_glyph(source, d, 40, 0, False))
            assert mask.getbbox() is not None
            assert 30 <= mask.size[1] <= 52


def test_refuses_to_overwrite_an_existing_dataset(tmp_path, fonts):
    synth.generate_dataset(tmp_path, {"train": 2, "valid": 1, "test": 1}, seed=0, fonts=fonts)
    with pytest.raises(synth.SynthError, match="already holds a dataset"):
        synth.generate_dataset(tmp_path, {"train": 2}, seed=0, fonts=fonts)
    assert synth.main(["--out", str(tmp_path), "--train", "2", "--valid", "1", "--test", "1"]) == 2


def test_cli_writes_the_layout(tmp_path):
    assert synth.main(["--out", str(tmp_path / "d"), "--train", "3", "--valid", "2", "--test", "1", "--seed", "4"]) == 0
    for split in ("train", "valid", "test"):
        assert os.path.isfile(tmp_path / "d" / f"{split}.json")
    manifest = json.load(open(tmp_path / "d" / "synth.json"))
    assert manifest["seed"] == 4 and manifest["counts"] == {"train": 3, "valid": 2, "test": 1}


def test_an_interrupted_generation_leaves_no_half_dataset(tmp_path, fonts):
    def interrupt(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synth.generate_dataset(tmp_path / "d", {"train": 6, "valid": 2}, fonts=fonts, progress=interrupt)
    assert os.listdir(tmp_path) == []
    synth.generate_dataset(tmp_path / "d", {"train": 2, "valid": 1}, fonts=fonts)
    synth.generate_dataset(tmp_path / "d", {"train": 3, "valid": 1}, fonts=fonts, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["d"]
    assert len(os.listdir(tmp_path / "d" / "train")) == 3
