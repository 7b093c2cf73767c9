"""The app's pages; ``streamlit_app.py`` routes to them with ``st.navigation``."""

import math
import os
import re

import streamlit as st
from PIL import Image, ImageDraw
from streamlit.runtime.pages_manager import PagesManager

from core.browse import data_root, find_datasets, find_splits, why_not_a_dataset
from core.checkpoint import is_checkpoint_file
from core.runs import PROJECT_ROOT, default_checkpoint, list_checkpoints

ROUTED = "_digit_studio_routed"  # set by streamlit_app.py whenever the router runs
# One colour per digit, so the same digit looks the same on every page and image.
DIGIT_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
                 "#42d4f4", "#f032e6", "#9a6324", "#469990", "#800000"]
LETTER_COLOUR = "#a9a9a9"  # letter boxes (core.synth --letter-boxes): grey, apart from every digit
LETTER_LABEL = "letter"
# The "Input size" choices of the Detect and Evaluate pages: auto is the checkpoint's own policy.
INPUT_SIZES = ["auto", 128, 192, 256, 320, 384, 512, 640, 800]


KEPT = "kept:"  # widget keys with this prefix keep their value while the user is on another page


def keep_form_values(state) -> None:
    """Streamlit drops a widget's value at the end of a run that does not draw it, so a form filled in
    on one page came back empty from another. Re-saving the value each run, in the router, keeps it
    (Streamlit's docs, "Working with widgets in multipage apps", option 3)."""
    for key in [k for k in state if isinstance(k, str) and k.startswith(KEPT)]:
        state[key] = state[key]


def ensure_routed() -> None:
    """Leave Streamlit's legacy ``pages/`` mode if this page was opened first, by its URL.

    A server whose entry script sits beside a ``pages/`` folder starts in that legacy mode
    (a menu made of file names) until ``st.navigation`` has run once, which only happens
    when the router itself runs. Rerunning through the router fixes the menu.
    """
    if PagesManager.uses_pages_directory and not st.session_state.get(ROUTED):
        # Only on a session's first run: a rerun later could swallow a widget event.
        st.session_state[ROUTED] = True
        PagesManager.uses_pages_directory = False
        st.rerun()


def boxed_picture(image: Image.Image, boxes, side: int) -> Image.Image:
    """``image`` with its long side at ``side`` px and ``boxes`` ``(x0, y0, x1, y1, digit)`` drawn in
    their digit's colour, each labelled with its digit (``LETTER_LABEL`` in place of a digit: a thin grey
    letter box, unlabelled)."""
    k = side / max(image.size)
    picture = image.convert("RGB").resize((max(1, round(image.size[0] * k)), max(1, round(image.size[1] * k))),
                                          Image.LANCZOS if k < 1 else Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    for x0, y0, x1, y1, digit in boxes:
        # Lines grow with the picture, but stay thin on a small box: a thick one would cover its digit.
        line = max(2, min(side // 110, round(min(x1 - x0, y1 - y0) * k / 12)))
        if digit == LETTER_LABEL:  # unlabelled: the words "letter" on every letter of a sign would hide it
            draw.rectangle((x0 * k, y0 * k, x1 * k, y1 * k), outline=LETTER_COLOUR, width=max(1, line // 2))
            continue
        colour = DIGIT_COLOURS[int(digit) % 10]
        draw.rectangle((x0 * k, y0 * k, x1 * k, y1 * k), outline=colour, width=line)
        draw.text((x0 * k + 2, y0 * k + 1), str(digit), fill=colour)
    return picture


def around_number(image: Image.Image, digits, others, side: int) -> Image.Image | None:
    """``boxed_picture`` of the part around the image's number when the number is small in it (``focus``),
    else None; ``others`` (letter boxes) are drawn but never decide the part."""
    area = focus(image.size, digits)
    return None if area is None else boxed_picture(image.crop(area), in_area([*digits, *others], area), side)


def number_picture(image: Image.Image, digits, others, side: int, zoom: bool) -> Image.Image:
    """``boxed_picture`` of the image, or with ``zoom`` of the part around its number when it is small in it."""
    around = around_number(image, digits, others, side) if zoom else None
    return around if around is not None else boxed_picture(image, [*digits, *others], side)


def focus(size: tuple[int, int], boxes) -> tuple[int, int, int, int] | None:
    """The part of an image worth showing when its boxes are small in it (a plate in a photo): the boxes
    with their height around them; None when they already fill a good part of the image."""
    if not boxes:
        return None
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    if max(x1 - x0, y1 - y0) > 0.3 * max(size):
        return None
    pad = y1 - y0  # a digit height of context each side: a wide number is not lost in a tall margin
    return (max(0, int(x0 - pad)), max(0, int(y0 - pad)), min(size[0], int(x1 + pad) + 1),
            min(size[1], int(y1 + pad) + 1))


def in_area(boxes, area: tuple[int, int, int, int]) -> list[tuple]:
    """``(x0, y0, x1, y1, label)`` boxes in the coordinates of the crop ``area`` (what :func:`focus` returns)."""
    return [(b[0] - area[0], b[1] - area[1], b[2] - area[0], b[3] - area[1], b[4]) for b in boxes]


LABEL_WITH_SCORE_PX = 44  # a box at least this wide on screen has room for "7 0.93"
DIGIT_LABEL_PX = 14  # and this wide for "7": narrower digits share one label, the whole number


def number_labels(boxes, digits, scores, on_screen: float) -> list[tuple[float, float, str]]:
    """Where to write the number read over the picture, as (x, y, text) at boxes' top-left corners.
    ``boxes`` (screen-scaled xyxy) are the digits read, left to right; ``on_screen``: screen px per
    picture px. Each digit gets its label; with its score when the box has room. A number too small
    on screen for one label per digit (a plate far off in a photo) gets one label, the whole number
    above its first digit: per-digit labels would pile up on it and hide it."""
    widths = [(b[2] - b[0]) * on_screen for b in boxes]
    if not boxes:
        return []
    if min(widths) < DIGIT_LABEL_PX:
        return [(boxes[0][0], min(b[1] for b in boxes), "<b>" + "".join(str(d) for d in digits) + "</b>")]
    # Scores cut, not rounded, to two places: 0.795 shown as "0.80" would seem to pass a 0.80 slider it fails.
    return [(b[0], b[1], f"<b>{d}</b> {math.floor(s * 100) / 100:.2f}" if w >= LABEL_WITH_SCORE_PX else f"<b>{d}</b>")
            for b, d, s, w in zip(boxes, digits, scores, widths)]


def input_size_label(size) -> str:
    return "auto (recommended)" if size == "auto" else f"{size} px"


@st.cache_data(show_spinner=False, max_entries=1024)
def _holds_checkpoint(path: str, modified: float, size: int) -> bool:
    return is_checkpoint_file(path)  # keyed by modification time and size: a file written again is looked at again


def checkpoint_choices() -> list[str]:
    """The checkpoints a model can be loaded from (``core.runs.list_checkpoints``), without the other ``.pt`` files
    there (a bare state dict, a file of one's own)."""
    found = []
    for path in list_checkpoints():
        try:
            stat = os.stat(path)
        except OSError:  # removed since it was listed
            continue
        if _holds_checkpoint(path, stat.st_mtime, stat.st_size):
            found.append(path)
    return found


def checkpoint_label(path: str) -> str:
    if os.path.abspath(path) == os.path.abspath(default_checkpoint()):
        return "default.pt (shipped)"
    return shown_path(path)


def file_stem(label: str) -> str:
    """A download's file name from a checkpoint's label ("runs/a/best.pt" -> "runs-a-best")."""
    stem = label.split(" (")[0].removesuffix(".pt")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "checkpoint"


def shown_path(path: str) -> str:
    """``path`` relative to the project when inside it, else whole: "../trial-runs" would send a user
    looking in the wrong place (a sibling folder's name can start with the project's)."""
    absolute = os.path.abspath(path)
    inside = absolute.startswith(os.path.join(PROJECT_ROOT, ""))
    return os.path.relpath(absolute, PROJECT_ROOT) if inside else absolute


def resolve(path: str) -> str:
    """A path typed in the app: relative to the project folder."""
    return path if os.path.isabs(path) else os.path.join(PROJECT_ROOT, path)


def pick_dataset(label: str, help_text: str, nothing_found: str) -> tuple[str, list[str]]:
    """A folder picker offering the folders under data/ (any path can be typed); returns the
    resolved folder and its splits, or stops the page with what to do (``nothing_found`` is told
    where it looked, as ``{where}``)."""
    search_root = data_root(PROJECT_ROOT)
    known = [shown_path(p) for p in find_datasets(search_root)]
    folder = st.selectbox(label, known, index=0 if known else None, accept_new_options=True,
                          placeholder="Type a path, e.g. data/svhn", help=help_text)
    if not folder:
        st.info(nothing_found.format(where=search_root))
        st.stop()
    root = resolve(os.path.expanduser(folder))
    splits = find_splits(root)
    if not splits:
        st.error(why_not_a_dataset(folder, root))
        st.stop()
    return root, splits
