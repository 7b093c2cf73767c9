"""Data page: open a dataset in the course layout and look at it: counts, histograms, images with boxes."""

import os

import plotly.express as px
import streamlit as st
from PIL import Image

from core.browse import page_of, read_split_table, select_images
from core.data import DatasetError, check_split, describe_check
from pages import (DIGIT_COLOURS, LETTER_LABEL, around_number, boxed_picture, ensure_routed, number_picture,
                   pick_dataset)

ensure_routed()

PER_PAGE = 24
COLUMNS = 6
THUMB_SIDE = 220  # px: every picture of the grid is drawn this large (small crops enlarged)
CLOSE_UP_SIDE = 900  # px: one picture of the page, large enough to see a small plate in a scene
AUTO_CHECK_IMAGES = 10_000  # about 3 s per 10,000 PNGs on a 2-core machine; a larger split is checked when asked


@st.cache_data(show_spinner="Reading the annotations...", max_entries=16)
def load_table(root: str, split: str, mtime: float):
    """One read per annotation file version: the tables, not the images."""
    return read_split_table(root, split)


def json_mtime(root: str, split: str) -> float:
    return os.path.getmtime(os.path.join(root, f"{split}.json"))


@st.cache_data(show_spinner="Checking every image file...", max_entries=16)
def checked(root: str, split: str, json_version: float, folder_version: float) -> tuple[list[str], bool]:
    """(the split's check in lines, whether training would refuse it), once per version of its JSON and folder:
    the tables above read the annotations only, so a missing or corrupt image would otherwise show up mid-run."""
    try:
        check = check_split(root, split)
    except DatasetError as exc:
        return str(exc).splitlines(), True
    return describe_check(check), bool(check.problems) and not check.empty


def label_of(row) -> str:
    return f"#{row.image_id} · {row.number if row.digits else 'no digits'}"


def boxes_of(table, image_id: int) -> tuple[list, list]:
    """The image's digit boxes and letter boxes, ``(x0, y0, x1, y1, label)``."""
    digits = [(r.x, r.y, r.x + r.w, r.y + r.h, r.digit) for r in table.boxes_of(image_id).itertuples()]
    letters = [(r.x, r.y, r.x + r.w, r.y + r.h, LETTER_LABEL) for r in table.letters_of(image_id).itertuples()]
    return digits, letters


def drawn(path: str, table, image_id: int, side: int = THUMB_SIDE, zoom: bool = False) -> Image.Image:
    """The picture with its long side at ``side`` px, each box in its digit's colour, letter boxes grey;
    with ``zoom``, only the part around its number when the number is small in it."""
    with Image.open(path) as handle:
        return number_picture(handle, *boxes_of(table, image_id), side, zoom)


def close_up(path: str, table, image_id: int) -> tuple[Image.Image, Image.Image | None]:
    """The picture large, and the part around its number enlarged when the number is small in it (else None)."""
    digits, letters = boxes_of(table, image_id)
    with Image.open(path) as handle:
        return (boxed_picture(handle, digits + letters, CLOSE_UP_SIDE),
                around_number(handle, digits, letters, CLOSE_UP_SIDE // 2))


st.title("Browse a dataset")
st.caption("Any folder in the course layout: `train/ valid/ test/` image folders with `train.json`, "
           "`valid.json`, `test.json` (COCO; category_id 1..10 = digit 0..9, and 11 = letter where the file "
           "declares it, as `core.synth --letter-boxes` does), as `core.synth` and `core.convert` write them.")

root, splits = pick_dataset(
    "Dataset folder", "Pick one under data/ or type any path.",
    "No dataset found under `{where}`. Generate one on the **Train** page, convert SVHN, VOC or YOLO labels with "
    "`python -m core.convert`, or type a folder's path above.")

tables, problems = {}, {}
for name in splits:
    try:
        tables[name] = load_table(root, name, json_mtime(root, name))
    except DatasetError as exc:
        problems[name] = str(exc)
for name, message in problems.items():
    st.error(f"Split **{name}** cannot be read: {message}")
if not tables:
    st.stop()

columns = st.columns(len(tables))
flagged = {}  # split: (the verdict or the warnings' head, their lines)
for column, (name, table) in zip(columns, tables.items()):
    column.metric(f"{name}", f"{len(table.images):,} image{'' if len(table.images) == 1 else 's'}")
    letters = f" · {len(table.letters):,} letters (grey boxes)" if len(table.letters) else ""
    column.caption(f"{len(table.boxes):,} digits{letters} · `{name}.json`")
    if len(table.images) <= AUTO_CHECK_IMAGES or column.button(f"Check every image of {name}", key=f"check-{name}",
                                                               help="Decodes every image file and checks every box "
                                                                    "against it, as training will."):
        lines, bad = checked(root, name, json_mtime(root, name), os.path.getmtime(os.path.join(root, name)))
        if bad:  # the verdict, then the problems (or the one line of a file that cannot be read)
            flagged[name] = (lines[1] if len(lines) > 1 else lines[0], lines[2:])
        elif len(table.images):
            column.caption(":material/check_circle: every image file reads and every box fits")
            if len(lines) > 1:  # warnings (photos stored rotated): used as they are, but worth a look
                flagged[name] = (lines[1], lines[2:])
    elif table.left_out:  # not checked yet, but the tables already miss these boxes
        flagged[name] = (f"{len(table.left_out)} box(es) whose category is no digit are left out of the tables below; "
                         "training refuses the split until they are fixed", [str(p) for p in table.left_out[:25]])
for name, (head, problems) in flagged.items():
    st.warning(f"Split **{name}**: {head.strip()}.\n\n" + "\n".join(f"- {line.strip()}" for line in problems))

with_images = [name for name, t in tables.items() if len(t.images)]
split = st.radio("Split", list(tables), horizontal=True, index=list(tables).index(with_images[0]) if with_images else 0)
table = tables[split]
if not len(table.images):
    st.info(f"Split **{split}** has no images; pick another split above.")
    st.stop()
left, right = st.columns(2)
with left:
    classes = table.boxes["digit"].value_counts().reindex(range(10), fill_value=0)
    st.plotly_chart(px.bar(x=[str(d) for d in classes.index], y=classes.values, labels={"x": "digit", "y": "boxes"},
                           title="Boxes per digit", color=[str(d) for d in classes.index],
                           color_discrete_sequence=DIGIT_COLOURS).update_layout(showlegend=False, height=300)
                    .update_xaxes(type="category"),
                    key="classes")
    lengths = table.images["digits"].value_counts().sort_index()
    st.plotly_chart(px.bar(x=lengths.index.astype(str), y=lengths.values, labels={"x": "digits in the image", "y": "images"},
                           title="Digits per image").update_layout(height=300).update_xaxes(type="category"),
                    key="lengths")
with right:
    st.plotly_chart(px.histogram(table.boxes, x="h", nbins=60, labels={"h": "box height (px)"},
                                 title="Box heights").update_layout(height=300, yaxis_title="boxes"), key="heights")
    sizes = table.images.melt(value_vars=["width", "height"], var_name="side", value_name="px")
    st.plotly_chart(px.histogram(sizes, x="px", color="side", nbins=60, barmode="overlay", opacity=0.6,
                                 title="Image sizes").update_layout(height=300, yaxis_title="images"), key="sizes")

st.subheader("Images")
filters = st.columns([1, 1, 1, 1, 2])
digit = filters[0].selectbox("Holding digit", ["any", *range(10)])
present_lengths = sorted(int(n) for n in table.images["digits"].unique())
length = filters[1].selectbox("Number length", ["any", *present_lengths],
                              format_func=lambda v: "no digits" if v == 0 else str(v))
chosen = select_images(table, None if digit == "any" else digit, None if length == "any" else length)
pages = max(1, -(-len(chosen) // PER_PAGE))
page = filters[2].number_input("Page", 1, pages, 1, 1, key=f"page-{split}-{digit}-{length}")
zoom = filters[3].toggle("Zoom in", value=True, key="zoom",
                         help="A number small in its image (a plate in a photo, a crop on padding) is shown "
                              "enlarged, with its surroundings cut; the close-up below shows the whole image.")
filters[4].markdown(f"<br>{len(chosen):,} image(s), page {page} of {pages}", unsafe_allow_html=True)

shown = page_of(chosen, int(page), PER_PAGE)
if not len(shown):
    st.info("No image matches these filters.")
# Row by row, so every row starts at the same height and reads left to right.
for start in range(0, len(shown), COLUMNS):
    for column, row in zip(st.columns(COLUMNS), shown.iloc[start:start + COLUMNS].itertuples()):
        with column:
            try:
                picture = drawn(os.path.join(table.image_dir, row.file_name), table, row.image_id, zoom=zoom)
            except OSError as exc:
                st.warning(f"#{row.image_id} {row.file_name}: {exc}")
                continue
            st.image(picture, caption=f"{label_of(row)} · {row.width}x{row.height}")

if len(shown):
    with st.expander("Look closer at one image of this page", icon=":material/zoom_in:"):
        closer = st.selectbox("Image", list(shown.itertuples()), format_func=label_of)
        try:
            whole, around = close_up(os.path.join(table.image_dir, closer.file_name), table, closer.image_id)
            st.image(whole)
            if around is not None:
                st.image(around)
                st.caption("The number is small in this image: here it is enlarged.")
        except OSError as exc:
            st.warning(f"#{closer.image_id} {closer.file_name}: {exc}")
        st.dataframe(table.boxes_of(closer.image_id).drop(columns="image_id"), hide_index=True)
