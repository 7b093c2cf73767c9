"""Photo scenes: house-number plates small in large rendered photos, and photos with no digits.

    python bench/photo_scenes.py [--ckpt FILE] [--scenes 200] [--empty 200] [--seed 2026] [--dir RENDERED]
    python bench/photo_scenes.py --plate-width 0.03,0.10 --min-digit-px 12 --empty 0   # small plates

Renders (once per generator version and font list, cached under data/) ``--scenes`` photos of 640-1280 px with a plate at 10-35% of the
image width (``core.synth.render_photo_scene``: not the training generator's mix, and its own seed
and split name, so none of these images was trained on) and ``--empty`` digit-free photos of the
same walls, doors, plants and lettered signs. Prints Task 1 and Task 2 on the plates (by number
length) and how often a number is read from a photo with no digits, with the median ms/image.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os

from common import ROOT, median_ms, timed_detections
from core import synth
from core.checkpoint import atomic_write_text
from core.data import load_split
from core.evaluate import score_detections
from core.outputs import check_output_file
from core.predict import load_model, parse_input_size, read_number


def font_list_tag(fonts: list[str]) -> str:
    """A short name for a font list: the same seed draws other scenes from other fonts."""
    names = "\n".join(os.path.basename(f) for f in fonts)
    return f"f{len(fonts)}-{hashlib.sha1(names.encode()).hexdigest()[:8]}"


def render(out: str, scenes: int, empty: int, seed: int, fonts: list[str],
           plate_width: tuple[float, float] = synth.PHOTO_PLATE_WIDTH, min_digit_px: float = 0) -> None:
    """``out/test`` + ``test.json``: plates; ``out/valid`` + ``valid.json``: digit-free photos."""
    if os.path.isfile(os.path.join(out, "valid.json")):
        return
    print(f"bench/photo_scenes: rendering {scenes} photos with a plate and {empty} without digits in {out}", flush=True)
    work = out + ".partial"
    for split, count, with_number in (("test", scenes, True), ("valid", empty, False)):
        os.makedirs(os.path.join(work, split), exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            rng, np_rng = synth.sample_rngs(seed, f"photo-{split}", image_id)
            image, boxes = synth.render_photo_scene(rng, fonts, np_rng, with_number, plate_width, min_digit_px)
            image.save(os.path.join(work, split, f"{image_id}.png"), compress_level=1)
            images.append({"id": image_id, "file_name": f"{image_id}.png", "width": image.size[0],
                           "height": image.size[1]})
            for x, y, w, h, digit in boxes:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "bbox": [x, y, w, h],
                                    "category_id": digit + 1, "area": w * h, "iscrowd": 0})
        coco = {"info": {"description": f"photo scenes, seed {seed}"}, "images": images,
                "annotations": annotations, "categories": synth.categories()}
        with open(os.path.join(work, f"{split}.json"), "w") as handle:
            json.dump(coco, handle)
    with open(os.path.join(work, "fonts.json"), "w") as handle:
        json.dump([os.path.basename(f) for f in fonts], handle, indent=1)
    os.replace(work, out)


def plate_width(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not two shares LO,HI such as 0.10,0.35") from None
    if not 0 < low <= high < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the shares need 0 < LO <= HI < 1")
    return low, high


def scene_tag(args: argparse.Namespace) -> str:
    """The folder-name part of non-default plate sizes (the default scenes keep their old folder)."""
    if args.plate_width == synth.PHOTO_PLATE_WIDTH and args.min_digit_px == 0:
        return ""
    return f"-w{args.plate_width[0]:g}-{args.plate_width[1]:g}-d{args.min_digit_px:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=f"{ROOT}/checkpoints/default.pt")
    parser.add_argument("--scenes", type=int, default=200,
                        help="photos with a plate to render and read (>= 1; default 200)")
    parser.add_argument("--empty", type=int, default=200,
                        help="photos without digits to render and read: how often a wall is read as a number "
                             "(>= 0; default 200)")
    parser.add_argument("--seed", type=int, default=2026,
                        help="the scenes drawn (another seed: other photos; default 2026)")
    parser.add_argument("--plate-width", type=plate_width, default=synth.PHOTO_PLATE_WIDTH, metavar="LO,HI",
                        help="the plate's width as a share of the photo's (default 0.10,0.35; 0.03,0.10: small "
                             "plates, as on a phone photo of a whole house front)")
    parser.add_argument("--min-digit-px", type=float, default=0,
                        help="digits at least this tall in the photo (default 0: the plate width alone decides)")
    parser.add_argument("--input-size", default=None,
                        help="'auto' (the checkpoint's own policy, the default) or a fixed short side in px")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--dir", default=None,
                        help="score the scenes already rendered in this folder (another font list or generator "
                             "version) instead of this machine's")
    args = parser.parse_args()
    if args.scenes < 1 or args.empty < 0:
        parser.error(f"--scenes {args.scenes} --empty {args.empty}: render at least one photo with a plate, and no "
                     "negative number of digit-free ones")
    try:
        check_output_file(args.json, "--json")
    except ValueError as exc:
        parser.error(str(exc))
    if args.dir:
        out = args.dir
        if not os.path.isfile(os.path.join(out, "valid.json")):
            parser.error(f"--dir {out}: no rendered scenes there (test.json and valid.json)")
    else:
        # The generator's version and the installed fonts are part of the name: the scenes change with
        # either, and so would the figures.
        fonts = synth.usable_fonts()
        out = os.path.join(ROOT, "data", f"bench-photo-scenes-v{synth.GENERATOR_VERSION}-{args.seed}-{args.scenes}-"
                                         f"{args.empty}-{font_list_tag(fonts)}{scene_tag(args)}")
        render(out, args.scenes, args.empty, args.seed, fonts, args.plate_width, args.min_digit_px)
    loaded = load_model(args.ckpt)
    input_size = parse_input_size(args.input_size)
    reader = loaded.reader

    plates = load_split(out, "test")
    detections, seconds = timed_detections(loaded, plates.records, input_size)
    metrics = score_detections(plates, detections, reader)
    with open(os.path.join(out, "valid.json")) as handle:
        has_empty = bool(json.load(handle)["images"])
    empty_records = load_split(out, "valid").records if has_empty else []
    empty_detections, empty_seconds = timed_detections(loaded, empty_records, input_size) if has_empty else ([], [])
    read = [read_number(d, reader) for d in empty_detections]
    clean = sum(n == "-1" for n in read) / len(read) if read else None
    sizes = sorted(max(r.width, r.height) for r in plates.records)

    print(f"{out}: {len(plates.records)} photos with a plate (long side {sizes[0]}-{sizes[-1]} px), "
          f"{len(empty_records)} without digits; {args.ckpt}; inference: {loaded.inference_note(input_size)}; "
          f"Task 2: {reader.describe()}")
    print(f"  plates   Task 2 {metrics['task2_accuracy']:.3f}   mAP@[.5:.95] {metrics['mAP']:.3f}   "
          f"AP50 {metrics['AP50']:.3f}   AP75 {metrics['AP75']:.3f}")
    for length, row in metrics["task2_by_length"].items():
        print(f"           {length}-digit numbers: {row['accuracy']:.3f} ({row['correct']}/{row['images']})")
    if read:
        print(f"  no digits: nothing read in {clean:.3f} of {len(read)} photos "
              f"(examples read: {[n for n in read if n != '-1'][:8]})")
    print(f"  speed    median {median_ms(seconds + empty_seconds):.1f} ms/photo, one at a time")
    if args.json:
        atomic_write_text(args.json, json.dumps({**metrics, "empty_clean": clean,
                                                 "median_ms": median_ms(seconds + empty_seconds)}, indent=1))


if __name__ == "__main__":
    main()
