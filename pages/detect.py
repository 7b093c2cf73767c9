"""Detect page: upload images (or take a photo), see every digit boxed and the number read."""

import base64
import datetime
import io
import os
import time
from dataclasses import replace

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image, ImageDraw

from core.checkpoint import CheckpointError
from core.images import decode_image
from core.model import digitnet_width_of
from core.predict import (ENLARGED_PAST_AUTO, NumberReader, enlarged_past_auto, image_ids_csv_bytes, join_predictions,
                          load_model, pred_csv_bytes, pred_json_bytes, predict_images, read_digits, read_region,
                          repeated_names)
from pages import (DIGIT_COLOURS, INPUT_SIZES, checkpoint_choices, checkpoint_label, ensure_routed, input_size_label,
                   number_labels)

ensure_routed()

# An animated GIF gives its first frame; HEIC is what an iPhone saves (core.images reads it through pillow-heif).
UPLOAD_TYPES = ["png", "jpg", "jpeg", "heic", "heif", "webp", "avif", "bmp", "gif", "tif", "tiff"]


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def get_model(path: str, mtime: float):
    """One loaded model per checkpoint file version (path + modification time)."""
    return load_model(path)


DISPLAY_SIDE = 1024  # px: larger pictures are drawn reduced (the browser gets a small array; boxes scale with it)


@st.cache_data(show_spinner=False, max_entries=256)
def run_model(path: str, mtime: float, name: str, data: bytes, input_size):
    """(prediction of one file, when it ran). Cached per file: moving a score slider or adding a file to
    the upload runs the model on no file it has read, and the time tells a cached result from a fresh one."""
    prediction = predict_images(get_model(path, mtime), [(name, data)],
                                input_size=None if input_size == "auto" else input_size)
    return prediction, time.time()


def timing_caption(parts, times: list[float], asked_at: float, device) -> str:
    """How long reading took, and which files were read earlier and kept rather than run again."""
    fresh = [p for p, t in zip(parts, times) if t >= asked_at]
    kept = [(p, t) for p, t in zip(parts, times) if t < asked_at]
    fresh_ok = sum(len(p.names) - len(p.errors) for p in fresh)
    seconds = sum(p.seconds for p in fresh)
    now = (f"{fresh_ok} image(s) in {seconds:.2f} s of model time (decoding and drawing not counted) · "
           f"{seconds / fresh_ok * 1000:.0f} ms per image on {device}"
           if fresh_ok else "no image read")
    if not kept:
        return now
    kept_ok = sum(len(p.names) - len(p.errors) for p, _ in kept)
    kept_ms = sum(p.seconds for p, _ in kept) / max(kept_ok, 1) * 1000
    latest = datetime.datetime.fromtimestamp(max(t for _, t in kept))
    # The cache is the app's, shared by every browser session: the same bytes uploaded anywhere are not read again.
    earlier = (f"{kept_ok} image(s), read earlier by this app (latest at {latest:%H:%M:%S}, in any session) and kept: "
               "not run again · "
               f"that took {kept_ms:.0f} ms per image on {device}")
    return earlier if not fresh else f"{now}; {earlier}"


def describe_checkpoint(meta: dict) -> str:
    best = meta.get("best") or {}
    metrics = meta.get("metrics") or {}
    data = meta.get("data") or {}
    synth = data.get("synth")
    trained_on = os.path.basename(str(data.get("root", "?")))
    if synth:
        trained_on += f" (synthetic, seed {synth.get('seed')}, {data.get('train_images', '?')} training images)"
    elif data.get("train_images"):
        trained_on += f" ({data['train_images']} training images)"
    m_ap = best.get("mAP", metrics.get("mAP"))
    parts = [f"**{meta.get('arch', '?')}**", f"trained on {trained_on}",
             f"best validation mAP {m_ap:.3f} (epoch {best.get('epoch', meta.get('epoch'))})" if m_ap is not None
             else f"epoch {meta.get('epoch')}"]
    width = digitnet_width_of(meta)
    if width not in (None, 1.0):
        parts[0] += f" at {width:g}x width"
    if "letter" in (meta.get("class_names") or []):
        parts.append("has a letter class: a box it calls a letter is not read as a digit")
    return " · ".join(parts)


def framed(region: list[float], size: tuple[int, int], margin: float = 0.3) -> tuple[float, float, float, float]:
    """``region`` with ``margin`` of its height around it, inside the picture: the frame drawn round the number
    read (a frame past the edge is not drawn, and a number that fills the image would lose it) and its close-up."""
    pad = margin * (region[3] - region[1])
    return (max(0.0, region[0] - pad), max(0.0, region[1] - pad), min(float(size[0]), region[2] + pad),
            min(float(size[1]), region[3] + pad))


def region_zoom(image, region: list[float], detection: dict, read: set[int], width: int = 320):
    """A close-up of the number read, with its boxes: in a photo the plate is a few pixels."""
    x0, y0, x1, y1 = framed(region, image.size, 0.5)  # about a digit height of what is around it
    box = (int(x0), int(y0), min(image.size[0], int(x1) + 1), min(image.size[1], int(y1) + 1))
    k = width / max(1, box[2] - box[0])
    crop = image.crop(box).resize((width, max(1, round((box[3] - box[1]) * k))), Image.LANCZOS)
    draw = ImageDraw.Draw(crop)
    for index, ((bx0, by0, bx1, by1), digit) in enumerate(zip(detection["boxes"], detection["digits"])):
        if index in read:
            draw.rectangle(((bx0 - box[0]) * k, (by0 - box[1]) * k, (bx1 - box[0]) * k, (by1 - box[1]) * k),
                           outline=DIGIT_COLOURS[digit % 10], width=2)
    return crop


SMALL_PICTURE_PX = 256 * 256  # up to this many pixels a picture goes as PNG (exact), larger ones as JPEG


def picture_uri(image: Image.Image) -> str:
    """The picture as a data URI for plotly's ``go.Image(source=...)``. Sent as ``z`` (a typed array), 14 photos of
    1,024 px came to 41 MB and took 5.4 s to draw in Chromium; as JPEG data URIs 6.6 MB and 1.4 s."""
    buffer = io.BytesIO()
    kind = "png" if image.width * image.height <= SMALL_PICTURE_PX else "jpeg"
    image.save(buffer, kind, **({"quality": 90} if kind == "jpeg" else {}))
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode()}"


FIGURE_WIDTH_PX = 560  # about the picture column: 3/5 of the wide layout beside the sidebar


def detection_figure(image, detection: dict, threshold: float, read: set[int], region: list[float] | None
                     ) -> go.Figure:
    """The picture with every box scoring ``threshold`` or more: the digits of the number read (``read``)
    bold and labelled, the others thin and dotted, labelled only on hover (they would cover the number's labels);
    ``region``, the number read, framed dashed."""
    shown = image.copy()
    shown.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
    width, height = shown.size
    kx, ky = width / image.size[0], height / image.size[1]  # rounding makes them differ on thin images

    def scaled(box):
        return box[0] * kx, box[1] * ky, box[2] * kx, box[3] * ky

    display_height = int(min(520, max(180, 640 * height / max(width, 1))))
    on_screen = min(FIGURE_WIDTH_PX / max(width, 1), display_height / max(height, 1))  # screen px per picture px
    figure = go.Figure(go.Image(source=picture_uri(shown), hoverinfo="skip"))
    if region is not None:
        x0, y0, x1, y1 = scaled(framed(region, image.size))
        figure.add_trace(go.Scatter(
            x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0], mode="lines", line={"color": "#ffd400", "width": 2,
                                                                               "dash": "dash"},
            hoverinfo="text", text="the number read", name="region", showlegend=False))
    for index, (box, score, digit) in enumerate(zip(detection["boxes"], detection["scores"], detection["digits"])):
        if score < threshold:
            continue
        x0, y0, x1, y1 = scaled(box)
        colour = DIGIT_COLOURS[digit % 10]
        in_number = index in read
        figure.add_trace(go.Scatter(
            x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0], mode="lines", fill="toself",
            fillcolor="rgba(255,255,255,0.06)", hoveron="fills+points",
            line={"color": colour, "width": 2} if in_number else {"color": colour, "width": 1, "dash": "dot"},
            text=f"digit {digit} · score {score:.2f}" + ("" if in_number else " · not part of the number read"),
            hoverinfo="text", name=f"digit {digit}", showlegend=False))
    # The scores stay in the hover and the table when a label has no room for them.
    order = sorted(read, key=lambda i: detection["boxes"][i][0] + detection["boxes"][i][2])
    labels = number_labels([scaled(detection["boxes"][i]) for i in order], [detection["digits"][i] for i in order],
                           [detection["scores"][i] for i in order], on_screen)
    for (x, y, text), index in zip(labels, order):
        colour = DIGIT_COLOURS[detection["digits"][index] % 10] if len(labels) == len(order) else "#333333"
        figure.add_annotation(x=x, y=y, text=text, showarrow=False, xanchor="left", yanchor="bottom",
                              font={"color": "white", "size": 12}, bgcolor=colour, opacity=0.9)
    figure.update_layout(margin={"l": 0, "r": 0, "t": 18, "b": 0}, height=display_height, dragmode=False)
    figure.update_xaxes(visible=False, range=[0, width])
    figure.update_yaxes(visible=False, range=[height, 0], scaleanchor="x")
    return figure


st.title("Detect house numbers")
checkpoints = checkpoint_choices()
if not checkpoints:
    st.info("No model is available yet: there is no `checkpoints/default.pt` and no checkpoint under `runs/`. "
            "Train one on the **Train** page (it can generate a synthetic dataset first), or run "
            "`python -m core.train --data DIR --out runs/NAME`.")
    st.page_link("pages/train.py", label="Go to the Train page", icon=":material/model_training:")
    st.stop()

with st.sidebar:
    choice = st.selectbox("Checkpoint", checkpoints, format_func=checkpoint_label,
                          help="The shipped default first, then, newest first, every checkpoint in checkpoints/ "
                               "and under runs/ (each run's best.pt and what was exported beside it; not its "
                               "last.pt). Other .pt files in run folders are left out.")
try:
    loaded = get_model(choice, os.path.getmtime(choice))
except (CheckpointError, OSError) as exc:
    st.error(f"Cannot use this checkpoint: {exc}")
    st.stop()
st.caption(describe_checkpoint(loaded.meta) + f" · running on **{loaded.device}**")


def reader_sliders(recorded: NumberReader, what: str, prefix: str = "") -> NumberReader:
    """Two sliders that change ``recorded``'s scores; ``what``: the images it reads, in the help texts;
    ``prefix``: before each label (no keys: a checkpoint with other scores gets sliders that start at them)."""
    anchor = st.slider(f"{prefix}Score to read a number", 0.0, 1.0, float(recorded.anchor), 0.05,
                       help=f"A number is read in {what} only when one of its digits scores at least this. Sliders "
                            "do not run the model again. The pred.json download keeps every detection (mAP "
                            "rewards low-score boxes).")
    member = st.slider(f"{prefix}Score of its other digits", 0.0, 1.0, float(recorded.member), 0.05,
                       help="The digits beside that one need at least this (never more than the score above). "
                            "Boxes below it are not drawn.")
    if member > anchor:
        st.caption(f"The second score ({member:.2f}) is above the first: {anchor:.2f} is used for both.")
    # The checkpoint's score for a one-digit number stays while it is above the anchor picked here.
    single = recorded.single if recorded.single is not None and recorded.single > anchor else None
    # Its score for a digit between two of the number's stays while it is below the member score picked here.
    gap = recorded.gap if recorded.gap is not None and recorded.gap <= min(member, anchor) else None
    reader = NumberReader(anchor, min(member, anchor), recorded.one_line, single, gap)
    if recorded.gap is not None and gap is None:
        st.caption(f"{prefix}With these scores, this checkpoint's {recorded.gap:.2f} for a digit between two of the "
                   "number's is off: it is above the second score.")
    return reader


with st.sidebar:
    recorded = loaded.reader
    if recorded.photos is not None:
        st.caption("Scores for crops (images the model reads at their own size or larger); photos have theirs "
                   "below.")
    reader = reader_sliders(replace(recorded, photos=None), "an image" if recorded.photos is None else
                            "a crop (an image the model reads at its own size or larger)")
    if recorded.photos is not None:
        with st.expander("Scores for photos"):
            st.caption(f"Photos (this checkpoint reduces any image with {loaded.photo_size()}) are read with "
                       "scores of their own: a photo is mostly wall, where lower scores read letters and rings.")
            reader = replace(reader, photos=reader_sliders(recorded.photos, "a photo", "Photos: "))
    st.caption(f"How a number is read: {reader.describe()}"
               + ("" if recorded.one_line else " (as this checkpoint records: no line rule)"))
    input_size = st.selectbox(
        "Input size", INPUT_SIZES, format_func=input_size_label,
        help="How large the model sees each image. **auto** (recommended) keeps each image near its own size and "
             "reads a small number again close up. A **fixed size** sets every image's short side: larger finds "
             "smaller digits in a photo but is slower and reads more walls as digits, and a close-up enlarged "
             "past its auto size is read worse (its digits grow past the sizes the model learned).")
    with st.expander("How this checkpoint reads an image"):
        st.caption(loaded.inference_note() + ".")
    use_camera = st.toggle("Take a photo", help="Use your camera instead of (or as well as) uploaded files.")

uploads = st.file_uploader("Images of house numbers", type=UPLOAD_TYPES, accept_multiple_files=True,
                           help="Drag and drop one or many images, or browse. Files are named like 123.png "
                                "in the course data; that number becomes the image_id in the downloads.")
files = [(u.name, u.getvalue()) for u in uploads or []]
if use_camera:
    photo = st.columns([2, 3])[0].camera_input("Photo")  # full width, its preview would push the results down
    if photo is not None:
        files.append(("camera.jpg", photo.getvalue()))

if not files:
    st.info(f"Upload images ({', '.join(UPLOAD_TYPES)}) to detect their digits: phone photos (JPEG, HEIC) too.")
    st.stop()

asked_at = time.time()
with st.spinner(f"Reading {len(files)} image(s)…"):  # cached files return at once; new ones run the model
    results = [run_model(choice, os.path.getmtime(choice), name, data, input_size) for name, data in files]
prediction = join_predictions([part for part, _ in results], reader, [data for _, data in files])
st.caption(timing_caption([part for part, _ in results], [ran_at for _, ran_at in results], asked_at,
                          loaded.device) + f" · input size {'auto' if input_size == 'auto' else f'{input_size} px'}")
readable = sum(d is not None for d in prediction.detections)
for name, reason in prediction.errors.items():
    st.error(f"**{name}**: {reason}. " + ("The other files were read; this one's row in pred.csv reads -1."
                                           if readable else "No file of this upload could be read."))
repeated = repeated_names(prediction.names)
if repeated:
    st.warning(f"More than one file is named {', '.join(repeated)}: each gets its own image_id (told apart by "
               "content, so the same files get the same ids in any upload order). image_ids.csv lists them; the "
               "results below show which picture has which id.")

numbers = prediction.numbers

if len(files) > 1:
    st.subheader("Batch")
    table = pd.DataFrame({
        "file": prediction.names,
        "image_id": prediction.image_ids,
        "number read": numbers,
        "digits": [0 if number == "-1" else len(number) for number in numbers],
        "status": ["not read: see the error above" if d is None else "ok" for d in prediction.detections],
        # Each file is read on its own (run_model), so its part's time is that file's.
        "ms": [None if d is None else round(part.seconds * 1000)
               for (part, _), d in zip(results, prediction.detections)],
    })
    st.dataframe(table, hide_index=True, width="stretch", column_config={"ms": st.column_config.NumberColumn(
        "ms", help="Model time for this file when it was read (a file kept from an earlier read shows that "
                   "read's time); decoding and drawing not counted.")})
# One photo gets its files too: a student with one image still hands in pred.json and pred.csv.
mapping = image_ids_csv_bytes(prediction.names, prediction.image_ids)
columns = st.columns(3)
columns[0].download_button("Download pred.json (Task 1)", pred_json_bytes(prediction.coco()), "pred.json",
                           "application/json", help="Every detection, COCO results format, as core.predict writes it.")
columns[1].download_button("Download pred.csv (Task 2)", pred_csv_bytes(prediction.csv_rows()),
                           "pred.csv", "text/csv",
                           help="image_id,pred_label read with the scores above; -1 = no digit.")
if mapping is not None:
    columns[2].download_button("Download image_ids.csv", mapping, "image_ids.csv", "text/csv",
                               help="Which file each image_id is: names that are not numbers (123.png), and a "
                                    "name used twice, get ids after the largest number, in name order, as "
                                    "core.predict assigns them.")

for index, ((name, data), image_id, detection, number) in enumerate(
        zip(files, prediction.image_ids, prediction.detections, numbers)):
    if detection is None:
        continue
    st.divider()
    image = decode_image(data, name)
    picture, details = st.columns([3, 2])
    with picture:
        as_photo = bool(detection.get("photo")) and reader.photos is not None  # read with the photos' own scores
        st.markdown(f"**{name}** · image_id {image_id} · {image.size[0]}x{image.size[1]} px"
                    + (" · read as a photo, with its scores" if as_photo else ""))
        read = set(read_digits(detection, reader))
        region = read_region(detection, reader)
        used = replace(reader.for_detection(detection), photos=None)  # this image's own scores
        threshold = used.member if used.gap is None else used.gap  # boxes drawn: any that could be read
        st.plotly_chart(detection_figure(image, detection, threshold, read, region), key=f"figure-{index}",
                        config={"displayModeBar": False})
    with details:
        st.metric("Number read", number if number != "-1" else "no digit (-1)")
        enlarged = enlarged_past_auto(loaded, image.size, input_size)
        if enlarged > ENLARGED_PAST_AUTO:
            st.warning(f"Input size {input_size} px enlarges this image {enlarged:.1f}x more than auto does: a "
                       "number that fills it grows past the digit sizes the model learned and is read worse. "
                       "Fixed sizes help with small digits in large photos; auto reads a close-up at its own size.")
        if detection.get("read_again"):
            st.caption(f"Read twice: {detection['read_again']}.")
        if region is not None:
            x0, y0, x1, y1 = region
            st.image(region_zoom(image, region, detection, read))
            st.caption(f"The number's region (dashed yellow), close up: its digits span {x1 - x0:.0f}x{y1 - y0:.0f} "
                       f"px at ({x0:.0f}, {y0:.0f}) of the image.")
        rows = sorted(({"digit": d, "score": round(s, 3), "x": round(b[0], 1), "y": round(b[1], 1),
                        "w": round(b[2] - b[0], 1), "h": round(b[3] - b[1], 1), "read": i in read}
                       for i, (b, s, d) in enumerate(zip(detection["boxes"], detection["scores"],
                                                         detection["digits"])) if s >= threshold),
                      key=lambda row: row["x"])  # left to right, the order the number is read in
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
                "score": st.column_config.NumberColumn("score", format="%.3f"),
                "read": st.column_config.CheckboxColumn(
                    "read", help="Part of the number read (not: a weaker box on the same digit, or a digit "
                             "off the number's line)")})
        if number == "-1":  # say why, in the reader's own terms: the boxes shown may score less than it needs
            best = max(detection["scores"], default=0.0)
            shown = "" if rows else f"no detection scores {threshold:.2f} or more, and "
            where = " (a photo)" if as_photo else ""
            st.caption(f"No number read{where}: {shown}the surest digit scores {best:.3f}; {used.describe()}.")
