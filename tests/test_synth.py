import hashlib
import json
import os
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

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
        assert len(per_image) >= count - 2, "digit-free scenes are rare"
        assert max(per_image.values()) <= 5


def test_crops_span_the_course_range_and_scenes_reach_photo_size(fonts):
    sizes = [synth.generate_sample(0, "train", i, fonts)[0].size for i in range(1, 200)]
    crops = [w for w, h in sizes if w <= synth.MAX_WIDTH]
    assert min(w for w, _ in sizes) >= synth.MIN_WIDTH and max(max(s) for s in sizes) <= synth.SCENE_MAX_SIDE
    assert min(crops) < 60 and max(crops) > 250, "number crops cover the course's 30-450 px"
    assert max(max(s) for s in sizes) > 900, "some numbers are seen in photo-sized scenes"


def _glyph_extents(glyph_map: np.ndarray) -> list[tuple[int, int, int, int]]:
    extents = []
    for k in range(1, int(glyph_map.max()) + 1):
        ys, xs = np.nonzero(glyph_map == k)
        if len(xs):
            extents.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    return extents


@pytest.mark.parametrize("index", range(1, 61))
def test_tight_boxes_are_each_glyphs_ink(fonts, index):
    rng, np_rng = synth.sample_rngs(11, "train", index)
    debug = {}
    image, boxes = synth.render_sample(rng, fonts, np_rng, debug=debug, boxes="tight")
    glyphs = np.asarray(debug["glyph_map"])
    assert glyphs.shape == (image.size[1], image.size[0])
    extents = _glyph_extents(glyphs)
    assert len(boxes) == len(extents)
    for x, y, w, h, _ in boxes:
        # Each box matches one glyph's ink extent within 2 px: the map is resampled by nearest
        # neighbour when a plate is enlarged (up to 3x) into a scene, the box exactly...
        best = min(extents, key=lambda e: abs(e[0] - x) + abs(e[1] - y) + abs(e[2] - x - w) + abs(e[3] - y - h))
        assert max(abs(best[0] - x), abs(best[1] - y), abs(best[2] - (x + w)), abs(best[3] - (y + h))) <= 2
    # ...and no glyph ink lies outside every box.
    inside = np.zeros_like(glyphs, dtype=bool)
    for x, y, w, h, _ in boxes:
        inside[max(0, y - 1):y + h + 1, max(0, x - 1):x + w + 1] = True
    assert not ((glyphs > 0) & ~inside).any()


def test_svhn_boxes_have_the_measured_margins_and_the_same_images(fonts):
    """The default convention draws each box around the ink with SVHN's margins (measured on real
    SVHN through bench/box_convention.py's ink finder, calibrated by bench/calibrate_convention.py); a seed
    gives the same image in either convention."""
    convention = synth.BOX_CONVENTIONS["svhn"]
    margins = {"left": [], "top": [], "right": [], "bottom": []}
    one_widths, other_widths = [], []
    for index in range(1, 120):
        loose_image, loose = synth.generate_sample(4, "train", index, fonts, boxes="svhn")
        tight_image, tight = synth.generate_sample(4, "train", index, fonts, boxes="tight")
        assert loose_image.tobytes() == tight_image.tobytes()
        assert len(loose) == len(tight) and [b[4] for b in loose] == [b[4] for b in tight]
        width, height = loose_image.size
        for (lx, ly, lw, lh, digit), (tx, ty, tw, th, _) in zip(loose, tight):
            assert lx <= tx and ly <= ty and lx + lw >= tx + tw and ly + lh >= ty + th, "the ink is inside the box"
            if min(lx, ly) > 0 and lx + lw < width and ly + lh < height and th >= 40:  # not clipped, measurable
                margins["left"].append((tx - lx) / th)
                margins["top"].append((ty - ly) / th)
                margins["right"].append((lx + lw - tx - tw) / th)
                margins["bottom"].append((ly + lh - ty - th) / th)
                (one_widths if digit == 1 else other_widths).append(lw / lh)
    for side, values in margins.items():
        assert len(values) > 60
        # Rounding to whole pixels adds up to a pixel per side: digits at least 40 px tall, within 0.025
        # (so a convention without a left or right margin, 0.096 and 0.070, fails).
        assert abs(np.median(values) - getattr(convention, side)) < 0.025, (side, np.median(values))
    # A "1" gets a box at least about as wide as SVHN's (0.44 of its height), narrower than other digits'.
    assert np.percentile(one_widths, 10) > 0.36 and np.median(other_widths) > np.median(one_widths)


def test_svhn_boxes_of_a_number_share_one_height_on_the_same_images(fonts):
    """SVHN's annotators gave every digit of a number one box height, tilted or not; generator v4's per-digit
    margins did not."""
    def render(convention):
        return [synth.generate_sample(9, "train", index, fonts, boxes=convention) for index in range(1, 80)]

    def spreads(samples):
        out = []
        for image, boxes in samples:
            heights = [h for x, y, w, h, _ in boxes if y > 0 and y + h < image.size[1]]  # not cut by the border
            if len(heights) >= 2:
                out.append(max(heights) - min(heights))
        return np.array(out)

    shared, own = render("svhn-v5"), render("svhn-v4")
    assert [image.tobytes() for image, _ in shared] == [image.tobytes() for image, _ in own], "the same draws"
    assert [[b[0], b[2], b[4]] for _, boxes in shared for b in boxes] == \
        [[b[0], b[2], b[4]] for _, boxes in own for b in boxes], "only the heights differ"
    shared_spread, own_spread = spreads(shared), spreads(own)
    # Whole pixels: a box's top is floored and its bottom ceiled, so equal heights differ by at most 1 px, except
    # where a box grew to keep a font's taller or descending digit's ink, or where what comes after the labels
    # (a crop edge through a box, a plate tilted into a scene) changed one (about one number in seven).
    assert len(shared_spread) > 30 and np.mean(shared_spread <= 1) > 0.8
    assert np.mean(own_spread <= 1) < np.mean(shared_spread <= 1) - 0.3


def test_generator_v6_boxes_hold_v5_boxes_on_the_same_images(fonts):
    """Generator v6 draws SVHN's margins as calibrated through the ink finder (0.096 / 0.136 / 0.070 / 0.100 of the
    ink height), larger than v5's raw reading of them (0.067 / 0.109 / 0.050 / 0.080); images and digits stay."""
    grown = []
    for index in range(1, 60):
        v6_image, v6 = synth.generate_sample(6, "train", index, fonts, boxes="svhn")
        v5_image, v5 = synth.generate_sample(6, "train", index, fonts, boxes="svhn-v5")
        assert v6_image.tobytes() == v5_image.tobytes() and [b[4] for b in v6] == [b[4] for b in v5]
        width, height = v6_image.size
        for (x, y, w, h, _), (x5, y5, w5, h5, _) in zip(v6, v5):
            assert x <= x5 and y <= y5 and x + w >= x5 + w5 and y + h >= y5 + h5, "a v6 box holds the v5 box"
            if min(x, y) > 0 and x + w < width and y + h < height and h5 >= 30:  # not clipped, measurable
                grown.append((h / h5, w - w5, h5))
    heights, extra_width, v5_heights = (np.array(v) for v in zip(*grown))
    assert len(grown) > 40
    # Box height over ink: (1 + 0.136 + 0.100) / (1 + 0.109 + 0.080) = 1.040 (whole pixels and jitter aside).
    assert 1.02 < np.median(heights) < 1.06, np.median(heights)
    # Width: (0.096 + 0.070) - (0.067 + 0.050) = 0.049 ink heights more, about 0.041 of the v5 box height.
    assert 0.02 < np.median(extra_width / v5_heights) < 0.07, np.median(extra_width / v5_heights)


def test_one_height_keeps_centres_and_widths():
    boxes = [(0, 10, 8, 30), (10, 8, 18, 34), (20, 12, 28, 28)]
    out = synth._one_height(boxes)
    assert [y1 - y0 for _, y0, _, y1 in out] == [20, 20, 20]
    assert [(y0 + y1) / 2 for _, y0, _, y1 in out] == [20, 21, 20]
    assert [(x0, x1) for x0, _, x1, _ in out] == [(x0, x1) for x0, _, x1, _ in boxes]
    assert synth._one_height([]) == []


def test_digits_touching_or_cut_by_the_border_are_labelled(fonts):
    touching = 0
    for index in range(1, 200):
        rng, np_rng = synth.sample_rngs(8, "train", index)
        debug = {}
        image, boxes = synth.render_sample(rng, fonts, np_rng, debug=debug, boxes="tight")
        glyphs = np.asarray(debug["glyph_map"])
        edge = np.concatenate([glyphs[:, 0], glyphs[:, -1], glyphs[0], glyphs[-1]])
        if (edge > 0).any():
            touching += 1
            # Every labelled glyph that reaches the edge has a box that reaches it too.
            for k in np.unique(edge[edge > 0]):
                ys, xs = np.nonzero(glyphs == k)
                assert any(x <= xs.min() + 1 and x + w >= xs.max() and y <= ys.min() + 1 and y + h >= ys.max()
                           for x, y, w, h, _ in boxes)
        for x, y, w, h, _ in boxes:
            assert 0 <= x and 0 <= y and x + w <= image.size[0] and y + h <= image.size[1], "clipped to the image"
    assert touching >= 10, f"only {touching}/199 images have a digit at the border"


def test_scenes_hold_small_numbers_and_some_hold_none(fonts):
    small_in_large, empty = 0, 0
    for index in range(1, 400):
        image, boxes = synth.generate_sample(5, "train", index, fonts)
        if not boxes:
            empty += 1
            continue
        heights = [h for _, _, _, h, _ in boxes]
        if max(image.size) >= 400 and max(heights) < 0.15 * image.size[1]:
            small_in_large += 1
            assert min(heights) >= 9, "digits in scenes stay readable (>= about 11 px before clipping)"
    assert small_in_large >= 40, small_in_large
    expected = (synth.DIGIT_FREE_SCENES + synth.WORDS_ALONE) * 399
    assert 0.5 * expected <= empty <= 1.5 * expected, f"{empty} images without digits in 399 (about {expected:.0f} expected)"


def test_negatives_share_is_a_dataset_choice(tmp_path, fonts):
    none = synth.Negatives(digit_free=0.0, words_alone=0.0, letters_beside=0.0)
    assert all(synth.generate_sample(5, "train", i, fonts, negatives=none)[1] for i in range(1, 120))
    for i in range(1, 60):
        rng, np_rng = synth.sample_rngs(9, "train", i)
        debug = {}
        synth.render_sample(rng, fonts, np_rng, debug=debug, negatives=none)
        assert debug["digits"] and not debug["letters"], f"image {i}: {debug['letters']!r} drawn"
    only_scenes = synth.Negatives(digit_free=1.0, words_alone=0.0)
    assert not any(synth.generate_sample(5, "train", i, fonts, negatives=only_scenes)[1] for i in range(1, 6))
    # An image drawn with digits is the same whatever the share of images without digits.
    fewer = synth.Negatives(digit_free=0.0, words_alone=0.0)
    for i in range(1, 40):
        default_image, default_boxes = synth.generate_sample(5, "train", i, fonts)
        if default_boxes:
            image, boxes = synth.generate_sample(5, "train", i, fonts, negatives=fewer)
            assert boxes == default_boxes and image.tobytes() == default_image.tobytes()
    for bad in ({"digit_free": -0.1}, {"words_alone": 1.5}, {"digit_free": 0.6, "words_alone": 0.6},
                {"letters_beside": -1}):
        with pytest.raises(synth.SynthError, match="negatives"):
            synth.Negatives(**bad)
    assert synth.main(["--out", str(tmp_path / "n"), "--train", "2", "--valid", "0", "--test", "0",
                       "--digit-free", "0.01", "--words-alone", "0.02", "--letters-beside", "0"]) == 0
    assert json.load(open(tmp_path / "n" / "synth.json"))["negatives"] == {
        "digit_free": 0.01, "words_alone": 0.02, "letters_beside": 0.0}
    with pytest.raises(SystemExit):
        synth.main(["--out", str(tmp_path / "m"), "--train", "1", "--words-alone", "2"])


def test_letters_beside_numbers_and_words_alone_are_unlabelled_by_default(fonts):
    with_letters = words_alone = 0
    for index in range(1, 300):
        rng, np_rng = synth.sample_rngs(9, "train", index)
        debug = {}
        image, boxes = synth.render_sample(rng, fonts, np_rng, debug=debug, boxes="tight")
        if not debug["letters"]:
            continue
        if not debug["digits"]:
            words_alone += 1
            assert boxes == [], "a word without digits has no boxes"
            assert np.asarray(image.convert("L")).std() > 3, "the word is drawn"
            continue
        with_letters += 1
        # Only the number's digits are boxed, and only digits' ink is in the label map.
        assert [b[4] for b in boxes] == debug["digits"][:len(boxes)] or len(boxes) < len(debug["digits"])
        assert set(np.unique(np.asarray(debug["glyph_map"]))) <= set(range(len(debug["digits"]) + 1))
    assert with_letters >= 20 and words_alone >= 8, (with_letters, words_alone)


def test_letter_boxes_box_the_letters_and_change_nothing_else(fonts):
    words, beside = 0, 0
    for index in range(1, 200):
        rng, np_rng = synth.sample_rngs(9, "train", index)
        debug = {}
        image, digit_boxes = synth.render_sample(rng, fonts, np_rng, debug=debug)
        rng, np_rng = synth.sample_rngs(9, "train", index)
        boxed_image, boxes = synth.render_sample(rng, fonts, np_rng, letter_boxes=True)
        assert boxed_image.tobytes() == image.tobytes(), "boxing letters draws nothing else"
        assert [b for b in boxes if b[4] != synth.LETTER] == digit_boxes
        letters = [b for b in boxes if b[4] == synth.LETTER]
        grey = np.asarray(image.convert("L"), dtype=np.float32)
        for x, y, w, h, _ in letters:
            assert grey[y:y + h, x:x + w].std() > 2, f"image {index}: letter box {x, y, w, h} holds no ink"
        for x, y, w, h, _ in digit_boxes:
            for lx, ly, lw, lh, _ in letters:
                overlap = max(0, min(x + w, lx + lw) - max(x, lx)) * max(0, min(y + h, ly + lh) - max(y, ly))
                assert overlap < 0.5 * min(w * h, lw * lh), f"image {index}: a letter box sits on a digit"
        if debug["letters"] and not debug["digits"]:
            words += 1
            assert letters, f"image {index}: the word {debug['letters']!r} has no letter box"
        elif debug["letters"]:
            beside += bool(letters)
    assert words >= 5 and beside >= 10, (words, beside)


def test_sign_letters_are_boxed_one_by_one(fonts):
    from PIL import Image, ImageDraw
    source = next(f for f in fonts if not f.startswith("<"))
    image = Image.new("L", (200, 60))
    draw = ImageDraw.Draw(image)
    font = synth._font(source, 30)
    draw.text((10, 10), "AB C", font=font, fill=255)
    boxes = synth._letter_boxes(draw, (10, 10), "AB C", font)
    assert len(boxes) == 3, "a space has no box"
    ink = np.asarray(image) > 0
    covered = np.zeros_like(ink)
    for x0, y0, x1, y1 in boxes:
        covered[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True
    assert covered[ink].mean() > 0.98, "every letter's ink is inside its box"
    assert all(a[2] <= b[0] + 2 for a, b in zip(boxes, boxes[1:])), "one box per letter, left to right"


def test_sign_letters_are_boxed_unless_something_drawn_later_covers_them(fonts, monkeypatch):
    from PIL import Image
    asked = []
    real = synth._letter_boxes
    monkeypatch.setattr(synth, "_letter_boxes", lambda *a: asked.append(real(*a)) or asked[-1])
    boxed = 0
    for seed in range(60):
        image = Image.new("RGB", (320, 240), (128, 128, 128))  # small scenes: small, antialiased letters
        boxes = synth._scene_objects(random.Random(seed), image, fonts, (-1, -1, -1, -1))
        assert all(box in [b for sign in asked for b in sign] for box in boxes)
        boxed += len(boxes)
    drawn = sum(len(sign) for sign in asked)
    assert drawn > 100 and boxed >= 0.8 * drawn, f"{boxed} of {drawn} sign letters boxed"
    assert synth._covers((0, 0, 10, 10), (5, 5, 15, 15), share=0.25)
    assert not synth._covers((0, 0, 10, 10), (5, 5, 15, 15), share=0.3) and not synth._covers((0, 0, 4, 4), (5, 5, 9, 9))


def test_a_letter_boxed_dataset_declares_its_letter_category(tmp_path, fonts):
    manifest = synth.generate_dataset(tmp_path / "l", {"train": 30}, seed=2, fonts=fonts, letter_boxes=True,
                                      negatives=synth.Negatives(words_alone=0.5))
    coco = json.load(open(tmp_path / "l" / "train.json"))
    assert coco["categories"][-1] == {"id": 11, "name": "letter", "supercategory": "not a digit"}
    assert any(a["category_id"] == 11 for a in coco["annotations"]) and manifest["letter_boxes"] is True
    plain = synth.generate_dataset(tmp_path / "p", {"train": 2}, seed=2, fonts=fonts)
    assert plain["letter_boxes"] is False
    assert [c["id"] for c in json.load(open(tmp_path / "p" / "train.json"))["categories"]] == list(range(1, 11))


def test_glyphs_taller_than_the_digit_height_keep_their_tops():
    from PIL import Image
    glyphs = [synth._Glyph(1, True, Image.new("L", (10, 40), 255)), synth._Glyph(2, True, Image.new("L", (10, 20), 255))]
    import random
    width, height = synth._place_glyphs(random.Random(0), glyphs, height=20)
    for glyph in glyphs:
        assert glyph.y >= 0 and glyph.y + glyph.mask.size[1] <= height
    bottoms = [g.y + g.mask.size[1] for g in glyphs]
    assert abs(bottoms[0] - bottoms[1]) <= 2, "one baseline"


def test_a_shadow_leaving_the_frame_does_not_come_back_on_the_other_side():
    from PIL import Image
    mask = Image.new("L", (20, 20))
    mask.paste(255, (15, 15, 20, 20))
    shifted = np.asarray(synth._shifted(mask, 3, 3))
    assert shifted[:15, :].max() == 0 and shifted[:, :15].max() == 0
    assert shifted[18:, 18:].min() == 255


def test_a_plate_frame_is_drawn_around_the_plate_not_over_its_digits(fonts):
    import random
    from PIL import Image
    framed = 0
    for seed in range(40):
        plate = synth._Sample(Image.new("RGB", (60, 30), (10, 200, 30)), [[0.0, 0.0, 60.0, 30.0, 1]], 20.0)
        placed = synth._in_scene(random.Random(seed), np.random.default_rng(seed), plate, fonts,
                                 synth.BOX_CONVENTIONS["svhn"], long_side=(400, 600), fraction=(0.2, 0.3))
        x0, y0, x1, y1, _ = (int(round(v)) for v in placed.boxes[0])
        inside = np.asarray(placed.image)[y0:y1, x0:x1]
        colours = np.unique(inside.reshape(-1, 3), axis=0)
        assert len(colours) <= 3, "the plate's pixels are its own (resampling may blend its edge)"
        ring = np.asarray(placed.image)[max(0, y0 - 1), x0:x1]
        framed += not (ring == inside[0]).all()
    assert framed >= 5


def test_digit_counts_and_first_digits_look_like_house_numbers(fonts):
    lengths, digits = [], []
    for i in range(1, 300):
        _, boxes = synth.generate_sample(2, "train", i, fonts)
        lengths.append(len(boxes))
        digits += [b[4] for b in boxes]
    assert set(lengths) - {0} == {1, 2, 3, 4, 5}, "0: a digit-free scene"
    assert set(digits) == set(range(10))


def test_fonts_cover_system_builtin_and_strokes(fonts):
    assert synth.BUILTIN_FONT in fonts and synth.STROKE_FONT in fonts
    assert all(f in fonts for f in fonts if not f.startswith("<")), "system fonts come first"
    # Each source draws every digit.
    import random

    for source in (synth.BUILTIN_FONT, synth.STROKE_FONT, fonts[0]):
        for d in range(10):
            mask = (synth._stroke_glyph(random.Random(0), d, 40, 0.6, 0.12) if source == synth.STROKE_FONT
                    else synth._font_glyph(source, str(d), 40, 0, False))
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
    assert manifest["version"] == synth.GENERATOR_VERSION and manifest["boxes"]["name"] == "svhn"
    assert manifest["boxes"]["one_height"] is True
    assert synth.main(["--out", str(tmp_path / "t"), "--train", "1", "--valid", "0", "--test", "0",
                       "--boxes", "tight"]) == 0
    assert json.load(open(tmp_path / "t" / "synth.json"))["boxes"]["name"] == "tight"
    with pytest.raises(synth.SynthError, match="unknown box convention"):
        synth.generate_dataset(tmp_path / "x", {"train": 1}, fonts=["<pillow-builtin>"], boxes="loose")


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


def test_photo_scenes_place_the_plate_at_the_width_asked_for(fonts):
    """Plates at 3-6% of the width; a digit floor, when asked for, enlarges a plate past that share."""
    for index in range(1, 9):
        for floor in (0, 14):
            rng, np_rng = synth.sample_rngs(3, "photo-test", index)
            image, boxes = synth.render_photo_scene(rng, fonts, np_rng, plate_width=(0.03, 0.06),
                                                    min_digit_px=floor)
            assert boxes and 640 <= max(image.size) <= synth.SCENE_MAX_SIDE
            span = max(x + w for x, _, w, _, _ in boxes) - min(x for x, _, _, _, _ in boxes)
            if floor == 0:
                assert span <= 0.06 * image.size[0] + 1, "the digits lie within a plate at most 6% of the width"
            else:
                assert min(h for _, _, _, h, _ in boxes) >= floor, "boxes of digits at least as tall as the floor"


def test_faint_strokes_change_only_the_ink(tmp_path, fonts):
    changed = 0
    for i in range(1, 30):
        default_image, default_boxes = synth.generate_sample(5, "train", i, fonts)
        image, boxes = synth.generate_sample(5, "train", i, fonts, faint_strokes=1.0)
        assert boxes == default_boxes, f"image {i}: the faint mix moved a box"
        assert image.size == default_image.size
        debug = {}
        rng, np_rng = synth.sample_rngs(5, "train", i)
        synth.render_sample(rng, fonts, np_rng, debug=debug)
        if not debug["digits"] and not debug["letters"]:
            assert image.tobytes() == default_image.tobytes(), f"image {i}: a scene without signs, yet changed"
        changed += image.tobytes() != default_image.tobytes()
        again, _ = synth.generate_sample(5, "train", i, fonts, faint_strokes=1.0)
        assert again.tobytes() == image.tobytes(), "the faint mix is deterministic per seed"
    assert changed >= 20, changed
    for bad in (1.5, -0.1, True):
        with pytest.raises(synth.SynthError, match="faint_strokes"):
            synth.generate_sample(5, "train", 1, fonts, faint_strokes=bad)
    assert synth.main(["--out", str(tmp_path / "f"), "--train", "2", "--valid", "0", "--test", "0",
                       "--faint-strokes", "0.3"]) == 0
    assert json.load(open(tmp_path / "f" / "synth.json"))["faint_strokes"] == 0.3
    with pytest.raises(SystemExit):
        synth.main(["--out", str(tmp_path / "g"), "--train", "1", "--faint-strokes", "-0.1"])


def test_faint_strokes_fade_a_digit_without_erasing_it():
    ink = Image.new("L", (40, 60))
    ImageDraw.Draw(ink).line([(4, 6), (36, 6), (14, 56)], fill=255, width=4)  # a 7: its bar and stem
    full = np.asarray(ink) == 255
    for seed in range(20):
        rng = random.Random(seed)
        out = np.asarray(synth._faint_strokes(rng, np.random.default_rng(seed), ink, 50, contrast=0.5), np.float32)
        assert (out <= np.asarray(ink)).all(), "fading never adds ink"
        assert out.max() < 255 * 0.95, "the digit is fainter than drawn"
        bar = out[4:9, 8:32]
        assert bar.max() >= 0.2 / 0.5 * 255 * 0.4, f"seed {seed}: the 7's bar is gone"
        assert (out[full] > 0).mean() > 0.95, f"seed {seed}: strokes erased"
    assert synth._faint_strokes(random.Random(0), np.random.default_rng(0), ink, 50, contrast=0.1) is ink, \
        "a number already faint is left as drawn"
