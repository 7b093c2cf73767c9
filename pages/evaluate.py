"""Evaluate page: score a checkpoint on a labelled folder and see where it fails (core/report.py)."""

import datetime
import io
import os
import zipfile

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from core.background import EvaluationJob, job_key
from core.predict import NumberReader, read_digits
from core.report import ERROR_KINDS, REPORT_FILES
from pages import (DIGIT_COLOURS, INPUT_SIZES, boxed_picture, checkpoint_choices, checkpoint_label, ensure_routed,
                   file_stem, focus, in_area, input_size_label, pick_dataset)

ensure_routed()

KEPT_RESULTS = 8  # finished evaluations kept (each holds its split's detections); the oldest go first
GALLERY_PER_PAGE = 6
GALLERY_SIDE = 300  # px per picture: the truth and the reading side by side
HEADLINE = (("mAP", "mAP@[.5:.95]"), ("AP50", "AP50"), ("AP75", "AP75"), ("task2_accuracy", "Task 2"))


@st.cache_resource
def evaluation_jobs() -> dict:
    """Every evaluation of this server, by JobKey: finished ones are the cache, running ones are shared."""
    return {}


def job_for(checkpoint: str, root: str, split: str, input_size, skip_invalid: bool,
            start: bool) -> EvaluationJob | None:
    jobs = evaluation_jobs()
    key = job_key(checkpoint, root, split, None if input_size == "auto" else input_size, skip_invalid)
    job = jobs.get(key)
    if start and (job is None or job.state in ("failed", "cancelled")):
        finished = sorted((k for k, j in jobs.items() if j.finished), key=lambda k: jobs[k].started)
        for old in finished[:max(0, len(finished) - KEPT_RESULTS + 1)]:
            jobs.pop(old).discard()
        job = jobs[key] = EvaluationJob(key).start()
    return job


def pictures(result, row, reader: NumberReader) -> tuple[Image.Image, Image.Image, bool]:
    """The truth and the reading drawn on the same picture: the whole image, or both enlarged around
    the number when it is small in the image (the third value says which)."""
    index = next(i for i, r in enumerate(result.split.records) if r.image_id == row.image_id)
    record, detection = result.split.records[index], result.detections[index]
    truth = [(*b, l - 1) for b, l in zip(record.boxes, record.labels)]
    read = [(*detection["boxes"][i], detection["digits"][i]) for i in read_digits(detection, reader)]
    with Image.open(record.path) as image:
        area = focus(image.size, truth + read)
        if area is not None:
            image = image.crop(area)
            truth, read = in_area(truth, area), in_area(read, area)
        return boxed_picture(image, truth, GALLERY_SIDE), boxed_picture(image, read, GALLERY_SIDE), area is not None


def delta(mine: float, theirs: float, places: int, colour: str) -> dict:
    """st.metric's delta arguments for a difference ("+0.012 vs 0.640"): one that rounds to nothing is grey and has
    no arrow, neither a red "-0.000" nor a green "+0.000"."""
    shown = round(mine - theirs, places)
    if shown == 0:
        return {"delta": f"±{0:.{places}f} vs {theirs:.{places}f}", "delta_color": "off", "delta_arrow": "off"}
    return {"delta": f"{shown:+.{places}f} vs {theirs:.{places}f}", "delta_color": colour}


def headline(result, other=None, other_label: str = "") -> None:
    metrics = result.report.metrics
    columns = st.columns(len(HEADLINE) + 1)
    for column, (key, label) in zip(columns, HEADLINE):
        change = {} if other is None else delta(metrics[key], other.report.metrics[key], 3, "normal")
        column.metric(label, f"{metrics[key]:.3f}", **change)
    ms = metrics["ms_per_image"]
    change = {} if other is None else delta(ms, other.report.metrics["ms_per_image"], 0, "inverse")
    columns[-1].metric("ms per image", f"{ms:.0f}", **change)
    if other is not None:  # named here, not in each delta: a metric's delta is cut off at the column's width
        st.caption(f"Below each figure: this checkpoint's difference from {other_label}, and its figure.")


def confusion_figure(result, title: str) -> go.Figure:
    table = result.report.confusion
    # Digit labels as text on category axes: plotly would read "0".."9" as numbers and drop "missed"/"extra".
    figure = px.imshow(table.to_numpy(), x=[str(c) for c in table.columns], y=[str(i) for i in table.index],
                       color_continuous_scale="Blues", text_auto=True,
                       labels={"x": "digit read", "y": "true digit", "color": "count"}, title=title)
    figure.update_traces(hovertemplate="true %{y}, read %{x}: %{z}<extra></extra>")
    figure.update_xaxes(type="category")
    figure.update_yaxes(type="category")
    return figure.update_layout(height=480, coloraxis_showscale=False)


def per_class_figure(result) -> go.Figure:
    table = result.report.per_class
    figure = go.Figure([go.Bar(name="AP @[.5:.95]", x=table["digit"], y=table["AP"]),
                        go.Bar(name="AP50", x=table["digit"], y=table["AP50"])])
    # The legend to the right of the title, above the plot: inside it, it covered the bars of digit 0 and 1.
    return figure.update_layout(barmode="group", height=340, yaxis_range=[0, 1.02], xaxis_type="category",
                                title="Per-class AP", margin={"t": 70},
                                legend={"orientation": "h", "yanchor": "bottom", "y": 1.04, "xanchor": "right",
                                        "x": 1})


def pr_figure(result) -> go.Figure:
    figure = go.Figure()
    for digit, rows in result.report.pr.groupby("digit"):
        figure.add_trace(go.Scatter(x=rows["recall"], y=rows["precision"], name=digit, mode="lines",
                                    line={"color": DIGIT_COLOURS[int(digit)]}))
    return figure.update_layout(height=380, xaxis={"range": [0, 1], "title": "recall"},
                                yaxis={"range": [0, 1.02], "title": "precision"}, legend_title="digit (click to hide)",
                                title="Precision-recall at IoU 0.5 (pycocotools)")


def task2_section(result) -> None:
    metrics = result.report.metrics
    left, right = st.columns(2)
    by_length = metrics["task2_by_length"]
    left.plotly_chart(px.bar(x=[str(k) for k in by_length], y=[row["accuracy"] for row in by_length.values()],
                             labels={"x": "digits in the number", "y": "Task 2 accuracy"},
                             text=[f"{row['correct']}/{row['images']}" for row in by_length.values()],
                             title="By number length").update_layout(height=320, yaxis_range=[0, 1])
                      .update_xaxes(type="category"),
                      key="by-length")
    sweep = result.report.sweep
    shown = sweep[sweep["member"].isin((0.3, 0.5, 0.7)) | (sweep["member"] == sweep["anchor"])].assign(
        member=lambda f: np.where(f["member"] == f["anchor"], "= anchor", f["member"].map("{:.1f}".format)))
    figure = px.line(shown, x="anchor", y="task2_accuracy", color="member", markers=True,
                     labels={"anchor": "anchor score", "task2_accuracy": "Task 2 accuracy", "member": "member score"},
                     title="Against the reader's scores (one line)")
    figure.add_vline(x=metrics["task2_reader"]["anchor"], line_dash="dash", annotation_text="used",
                     annotation_position="bottom right")
    # Zoomed to the data: on a 0-1 axis the member lines lie on top of one another.
    low = max(0.0, float(shown["task2_accuracy"].min()) - 0.05)
    right.plotly_chart(figure.update_layout(height=320, yaxis_range=[low, 1.0]), key="sweep")


def gallery(result) -> None:
    errors = result.report.errors
    if errors.empty:
        st.success("Every number in this split is read right.")
        return
    left, middle, right = st.columns([2, 1, 1])
    kinds = left.multiselect("Error kinds", ERROR_KINDS, default=list(ERROR_KINDS))
    digit = middle.selectbox("True number holds", ["any", *range(10)])
    chosen = errors[errors["kinds"].apply(lambda k: any(kind in k for kind in kinds))]
    if digit != "any":
        chosen = chosen[chosen["truth"].astype(str).str.contains(str(digit))]
    pages = max(1, -(-len(chosen) // GALLERY_PER_PAGE))
    page = right.number_input("Page", 1, pages, 1, key=f"gallery-{'-'.join(kinds)}-{digit}")
    st.caption(f"{len(chosen)} of {len(errors)} wrong images, worst first; page {page} of {pages}. "
               "Left: the truth; right: what the model read (by the checkpoint's Task 2 reader).")
    reader = result.report.reader
    for row in chosen.iloc[(page - 1) * GALLERY_PER_PAGE: page * GALLERY_PER_PAGE].itertuples():
        truth, read, enlarged = pictures(result, row, reader)
        columns = st.columns([1, 1, 1])
        # Each at its own width: a caption wider than its picture would otherwise stretch one of the pair.
        columns[0].image(truth, caption=f"#{row.image_id} · truth {row.truth}"
                         + (" · enlarged around the number" if enlarged else ""), width=truth.width)
        columns[1].image(read, caption=f"read {row.read}", width=read.width)
        columns[2].markdown(f"**{row.kinds}**  \n" + "  \n".join(
            f"{label}: `{value}`" for label, value in (("missed", row.missed), ("extra", row.extra),
                                                      ("wrong", row.wrong), ("box off", row.box_off)) if value))


def downloads(result, label: str = "", key: str = "this", primary: bool = True) -> None:
    """The report's files; ``label``: the checkpoint's name when two are compared (its files are named after it,
    so the two sets' downloads cannot overwrite each other)."""
    st.caption(f"{label + ': t' if label else 'T'}he report's files (also written to `{result.folder}`); "
               "`core.evaluate --report DIR` writes the same.")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for name in REPORT_FILES:
            bundle.write(os.path.join(result.folder, name), name)
    stem = file_stem(label) if label else ""  # the zip and each single file named after the checkpoint
    prefix = f"{stem}-" if stem else ""
    st.download_button(f"Download all of {label} (zip)" if label else "Download all (zip)", archive.getvalue(),
                       f"report-{stem}.zip" if stem else "report.zip", "application/zip",
                       type="primary" if primary else "secondary", key=f"download-zip-{key}")
    columns = st.columns(3)
    for index, name in enumerate(REPORT_FILES):
        with open(os.path.join(result.folder, name), "rb") as handle:
            columns[index % 3].download_button(name, handle.read(), prefix + name, key=f"download-{key}-{name}")


def show(result, label: str, other=None, other_label: str = "") -> None:
    headline(result, other, other_label)
    metrics = result.report.metrics
    st.caption(f"{metrics['images']} images · {metrics['inference']} · Task 2: {result.report.reader.describe()}")
    if other is not None and other.report.reader != result.report.reader:
        st.caption(f"{other_label} reads numbers otherwise · Task 2: {other.report.reader.describe()}")
    if metrics.get("skipped_images"):
        st.warning(f"{metrics['skipped_images']} image(s) with problems were skipped, not scored:\n\n"
                   + "\n".join(f"- {line}" for line in metrics["skipped"]))
    if metrics.get("data_warnings"):
        st.info("Scored as they are, worth a look:\n\n" + "\n".join(f"- {line}" for line in metrics["data_warnings"]))
    tabs = st.tabs(["Per class", "Precision-recall", "Confusion", "Task 2", "Failures", "Files"])
    with tabs[0]:
        st.plotly_chart(per_class_figure(result), key="per-class")
    with tabs[1]:
        st.plotly_chart(pr_figure(result), key="pr")
    with tabs[2]:
        if other is None:
            st.plotly_chart(confusion_figure(result, "Confusion (rows: truth; extra: read where there is none)"),
                            key="confusion")
        else:
            left, right = st.columns(2)
            left.plotly_chart(confusion_figure(result, "This checkpoint"), key="confusion")
            right.plotly_chart(confusion_figure(other, other_label), key="confusion-other")
    with tabs[3]:
        task2_section(result)
    with tabs[4]:
        gallery(result)
    with tabs[5]:
        downloads(result, label if other is not None else "")
        if other is not None:  # the compared checkpoint's report is a file set of its own
            st.divider()
            downloads(other, other_label, key="other", primary=False)


st.title("Evaluate a checkpoint")
checkpoints = checkpoint_choices()
if not checkpoints:
    st.info("No checkpoint yet: train one on the **Train** page.")
    st.stop()
with st.sidebar:
    checkpoint = st.selectbox("Checkpoint", checkpoints, format_func=checkpoint_label)
    compare = st.selectbox("Compare with", ["none", *[c for c in checkpoints if c != checkpoint]],
                           format_func=lambda c: c if c == "none" else checkpoint_label(c),
                           help="A second checkpoint on the same folder: its numbers and confusion matrix beside.")
    input_size = st.selectbox("Input size", INPUT_SIZES,
                              format_func=input_size_label)
    skip_invalid = st.toggle("Skip images with problems", help="Score the images that read and whose boxes check "
                                                               "out when some do not (each one skipped is listed), "
                                                               "instead of refusing the split.")
root, splits = pick_dataset(
    "Labelled folder", "Any folder in the course layout with annotations (<split>.json beside <split>/).",
    "No labelled folder under `{where}`: type a path, or make one with `python -m core.synth` or "
    "`python -m core.convert`.")
split = st.radio("Split", splits, index=splits.index("valid") if "valid" in splits else 0, horizontal=True)

chosen = [checkpoint] + ([] if compare == "none" else [compare])
try:
    jobs = [job_for(c, root, split, input_size, skip_invalid, start=False) for c in chosen]
except OSError as exc:
    st.error(f"Cannot evaluate: {exc}")
    st.stop()
if not all(job is not None and job.state == "done" for job in jobs):
    if st.button("Evaluate", type="primary", help="Results are kept per checkpoint, folder and split: "
                                                  "coming back to them is instant."):
        jobs = [job_for(c, root, split, input_size, skip_invalid, start=True) for c in chosen]


@st.fragment(run_every=1.0)
def watch(jobs: list) -> None:
    """Progress and Cancel while a job runs; one rerun of the page when they have all finished."""
    running = [j for j in jobs if j is not None and not j.finished]
    for job in running:
        name = checkpoint_label(job.key.checkpoint)
        st.progress(job.done / max(job.total, 1), f"{name}: {job.message} {job.done}/{job.total or '?'}")
        if st.button("Cancel", key=f"cancel-{id(job)}"):
            job.cancel()
    if not running:
        st.rerun()  # the whole page, now with the results


if any(job is not None and not job.finished for job in jobs):
    watch(jobs)
    st.stop()
for job in jobs:
    if job is not None and job.state in ("failed", "cancelled"):
        st.error(f"{checkpoint_label(job.key.checkpoint)}: evaluation {job.state}: {job.message}"
                 + ("\n\nTo score the other images, turn on **Skip images with problems** in the sidebar."
                    if job.skippable else ""))
if jobs[0] is None or jobs[0].state != "done":
    st.stop()
other = jobs[1].result if len(jobs) > 1 and jobs[1] is not None and jobs[1].state == "done" else None
# Results are kept (no Evaluate button then): say when they were made, and what makes the page evaluate anew.
evaluated_at = datetime.datetime.fromtimestamp(jobs[0].started)
st.caption(f"Evaluated at {evaluated_at:%H:%M:%S} and kept: this checkpoint, folder, split and input size read the "
           "same until the checkpoint or the annotation file changes.")
show(jobs[0].result, checkpoint_label(checkpoint), other, checkpoint_label(compare) if other else "")
