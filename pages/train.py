"""Train page: launch ``python -m core.train`` in the background and watch it live."""

import dataclasses
import datetime
import json
import math
import os
import typing

import plotly.graph_objects as go
from plotly.subplots import make_subplots
import streamlit as st

from core.config import (LONG_RUN_S, PRESETS, SCHEDULERS, ConfigError, TrainConfig, cli_flag, default_preset,
                         estimated_seconds, optimisation_steps)
from core.events import events_as_lines, latest_progress, read_events, tail_text
from core.launcher import (RUN_NAME, SAVED_FILES, LaunchError, remove_failed_run, run_dir_for, start_run, stop_run,
                           wait_until_started)
from core.model import ARCHITECTURES
from core.runs import is_locked, list_checkpoints, read_config, read_history, run_dirs, run_status, runs_root
from core.synth import SynthError, generate_dataset, usable_fonts
from pages import KEPT, ensure_routed, resolve, shown_path

ensure_routed()

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# The form's groups; fields that only one scheduler reads are shown with it.
FORM_GROUPS = {
    "Model": ("weights", "width", "min_size", "max_size"),
    "Optimisation": ("epochs", "subset_fraction", "batch_size", "lr", "weight_decay", "warmup_steps", "clip_grad_norm",
                     "seed"),
    "Schedule": {"cosine": ("t_max", "eta_min"), "step": ("step_size", "gamma")},
    "Run": ("device", "amp", "workers", "skip_invalid"),
}
HINTS = {"fasterrcnn_resnet50_fpn_v2": "the reference; use a GPU (about 0.06 training images/s on a 2-core CPU)",
         "digitnet_fpn": "compact; about 18 training images/s on a 2-core CPU"}
# Material icons: they render everywhere, emoji need a colour-emoji font the browser may not have.
STATE_ICONS = {"running": ":material/play_circle:", "completed": ":material/check_circle:",
               "stopped": ":material/stop_circle:", "failed": ":material/error:", "died": ":material/cancel:",
               "new": ":material/hourglass_empty:"}


def config_widget(field: dataclasses.Field, default, key: str):
    meta, label = field.metadata, field.metadata["label"]
    kind = typing.get_type_hints(TrainConfig)[field.name]
    help_text = field_help(field.name)
    if field.name == "weights":  # the shipped model and every run's best, or any path typed in
        options = ["auto", "none", *[shown_path(p) for p in list_checkpoints()]]
        if default not in options:
            options.append(default)
        return st.selectbox(label, options, index=options.index(default), help=help_text, key=key,
                            accept_new_options=True)
    if "choices" in meta:
        options = list(meta["choices"])
        return st.selectbox(label, options, index=options.index(default), help=help_text, key=key)
    if kind is bool:
        return st.checkbox(label, value=default, help=help_text, key=key)
    # The config's own range bounds the field, so - never steps a learning rate below zero (an open
    # bound such as lr > 0 still reaches the config's check, which names it).
    bounds = {"min_value": meta.get("low"), "max_value": meta.get("high")}
    if kind in (int, int | None):
        value = st.number_input(label, value=default, step=1, format="%d", help=help_text, key=key,
                                placeholder=meta.get("empty") if default is None else None, **bounds)
        return None if value is None else int(value)
    if kind is float:
        bounds = {k: None if v is None else float(v) for k, v in bounds.items()}
        return st.number_input(label, value=float(default), format="%g", step=fine_step(default), help=help_text,
                               key=key, **bounds)
    return st.text_input(label, value=str(default), help=help_text, key=key)


def form_warnings(preview: TrainConfig | None, train_images: int, cuda: bool, device: str | None, preset: str) -> None:
    """What the form's values would do that the user may not mean: no GPU, hours of CPU, a warm-up
    the run never finishes (its learning rate would never reach the one set), a from-scratch learning rate on
    trained weights."""
    if device == "cuda" and not cuda:
        st.warning("This machine has no CUDA GPU: a run with device cuda stops at once. Pick device cpu or auto "
                   "(and expect the reference to take days on a CPU), or the CPU preset.")
    if preview is None:
        return
    seconds = estimated_seconds(preview, train_images, cuda, os.cpu_count() or 1)
    if device != "cuda" and seconds is not None and seconds > LONG_RUN_S:
        shorter = "Fewer epochs or a smaller share" + ("" if preset.startswith("CPU") else ", or the CPU preset,")
        st.warning(f"As set, this run would take about {seconds / 3600:.0f} hours on this machine's CPU "
                   f"({preview.epochs} epochs of {preview.subset_fraction:g} of the training set with {preview.arch}). "
                   f"{shorter} make it shorter; it can also be stopped and resumed at any epoch.")
    steps = optimisation_steps(preview, train_images) if train_images else 0
    if steps and preview.warmup_steps > steps:
        st.warning(f"Warm-up steps ({preview.warmup_steps}) outlast the whole run ({steps} optimisation steps of "
                   f"{preview.batch_size} images): the learning rate would never reach {preview.lr:g}. Fewer warm-up "
                   "steps, or more epochs or images.")
    note = preview.fine_tune_lr_note()
    if note:
        st.warning(note[0].upper() + note[1:])


def field_help(name: str, text: str | None = None) -> str:
    """A field's tooltip: what it does (the config's help unless ``text``) and its command-line flag."""
    return f"{text or FIELDS[name].metadata['help']}  \n(`{cli_flag(FIELDS[name])}` on the command line)"


def form_fields(exc: Exception) -> str:
    """The form's names of the fields a ConfigError blames (its message uses the config's names)."""
    names = [FIELDS[name].metadata["label"] for name in getattr(exc, "fields", []) if name in FIELDS]
    return f" (check: {', '.join(names)})" if names else ""


def fine_step(value: float) -> float:
    """A +/- step a tenth of the value's leading digit (0.001 -> 0.0001, 0.7 -> 0.01): Streamlit's own
    0.01 turns a learning rate of 0.001 into -0.009 in one click."""
    if value <= 0:
        return 0.01
    return 10.0 ** (math.floor(math.log10(value)) - 1)


@st.cache_resource
def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@st.cache_data(max_entries=8)
def _train_images(json_path: str, mtime: float) -> int:
    with open(json_path, encoding="utf-8") as handle:
        return len(json.load(handle).get("images", []))


def count_images(data_dir: str) -> int:
    """Training images of a dataset folder (0 when there is none yet)."""
    path = os.path.join(data_dir, "train.json")
    try:
        return _train_images(path, os.path.getmtime(path))
    except (OSError, ValueError, AttributeError):
        return 0


def known_runs() -> list[str]:
    """Run folders (as the Schedulers page finds them) the launcher can address, newest first (others, e.g. made by
    hand with spaces, are listed on the Schedulers page but cannot be driven from here)."""
    names = [os.path.basename(path) for source, path in run_dirs() if source == "runs"]
    names = [n for n in names if RUN_NAME.fullmatch(n)]
    return sorted(names, key=lambda n: os.path.getmtime(os.path.join(runs_root(), n)), reverse=True)


def read_run(run_dir: str) -> tuple[dict, list[dict], str]:
    """(config, finished epochs, problem): a run whose files cannot be read is shown with the problem."""
    try:
        return read_config(run_dir), read_history(run_dir), ""
    except (OSError, ValueError) as exc:
        return {}, [], f"{type(exc).__name__}: {exc}"


def live_figure(history: list[dict], events: list[dict], epochs: int) -> go.Figure:
    """Validation mAP per finished epoch (0-1, above) and the training loss as it streams in (below),
    on one epoch axis: two scales never share a plot, so a near-zero mAP looks near zero."""
    progress = latest_progress(events)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.5, 0.5])
    figure.add_trace(go.Scatter(x=[h["epoch"] for h in history], y=[h["mAP"] for h in history],
                                name="validation mAP", mode="lines+markers", marker={"size": 9}), row=1, col=1)
    figure.add_trace(go.Scatter(x=[e["epoch"] - 1 + e["step"] / max(e["total"], 1) for e in progress],
                                y=[e["loss"] for e in progress], name="training loss (running mean of the epoch)",
                                mode="lines" if len(progress) > 20 else "lines+markers",  # a few steps: visible
                                line={"color": "#888"}), row=2, col=1)
    figure.update_layout(height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10}, hovermode="x unified",
                         legend={"orientation": "h", "y": 1.1}, showlegend=True)  # also before the first mAP
    figure.update_xaxes(range=[0, max(epochs, 1) + 0.1], dtick=max(1, epochs // 10))
    figure.update_xaxes(title="epoch", row=2, col=1)
    figure.update_yaxes(title="mAP", range=[0, 1], tickformat=".1f", row=1, col=1)
    figure.update_yaxes(title="loss", rangemode="tozero", tickformat=".2f", row=2, col=1)
    return figure


def remember_choice() -> None:
    st.session_state["active_run"] = st.session_state["run_picker"]


st.title("Train a detector")
st.caption("Runs `python -m core.train` in the background (it keeps going if you close this tab); "
           "its log, progress and curves stream below. The form is the same configuration as the command line.")
if "flash" in st.session_state:
    st.success(st.session_state.pop("flash"))

# ------------------------------------------------------------------ runs (live)
runs_at_start = known_runs()
polling = any(is_locked(run_dir_for(n)) for n in runs_at_start)


def run_header(selected: str, run_dir: str, status: dict, epochs: int) -> None:
    """The run's progress (or how it ended) and, while it runs, its Stop button."""
    state, progress = status["state"], status["progress"]
    top = st.columns([4, 1])
    with top[0]:
        if state == "running" and progress:
            done = (progress["epoch"] - 1 + progress["step"] / max(progress["total"], 1)) / epochs
            st.progress(min(done, 1.0), f"epoch {progress['epoch']}/{epochs} · step {progress['step']}/"
                                        f"{progress['total']} · loss {progress['loss']:.4f} · "
                                        f"{progress['images_per_s']:.1f} img/s")
        elif state == "running":
            st.progress(0.0, "starting...")
        else:
            st.markdown(f"**{STATE_ICONS.get(state, '')} {state}** · {status['epochs_done']} epoch(s) finished")
    if state == "running":
        # Asked once more: a stray click would end hours of training (it can be resumed, but not for free).
        with top[1].popover("Stop", icon=":material/stop_circle:", key=f"stop-menu-{selected}"):
            st.markdown(f"Stop **{selected}**? It ends at its next step; last.pt keeps the last finished "
                        "epoch, and *Resume this run* continues from there.")
            if st.button("Stop the run", key=f"stop-{selected}", type="primary"):
                stop_run(run_dir)
                st.toast("Stop requested: the run ends at its next step.")
    if state in ("failed", "died"):
        st.error(f"The run {state}: {status['message'] or 'see the log below'}")
    elif state == "stopped":
        st.info(status["message"] or "Stopped.")
    if status.get("refused") and state != "running":
        st.warning(f"The last try to resume this run was refused: {status['refused']}. The run is as it was: "
                   "its checkpoints and history are untouched.")


def run_output(selected: str, run_dir: str, status: dict, epochs: int, events: list, history: list) -> None:
    """The live chart, the last lines the run printed, and its stderr once it has ended."""
    state, progress = status["state"], status["progress"]
    if history or any(e["event"] == "progress" for e in events):
        st.plotly_chart(live_figure(history, events, epochs), key=f"live-{selected}")
    stdout = os.path.join(run_dir, "stdout.log")
    if os.path.exists(stdout) or not events:
        lines = [line.rsplit("\r", 1)[-1] for line in tail_text(stdout, 6000).splitlines()]
    else:  # started from the command line: what it printed went to that terminal
        lines = events_as_lines(events)
    if state == "running" and progress:
        lines.append(f"... epoch {progress['epoch']}/{epochs}, step {progress['step']}/{progress['total']}: "
                     f"loss {progress['loss']:.4f}, {progress['images_per_s']:.1f} img/s")
    st.code("\n".join(lines[-40:]) or "(no output yet)", language=None, wrap_lines=True)
    err_text = tail_text(os.path.join(run_dir, "stderr.log"), 3000)
    if err_text.strip() and state != "running":
        # Progress bars go to stderr too: this is where they and warnings are, open when the run failed.
        with st.expander("Progress bars and warnings (stderr)", expanded=state in ("failed", "died")):
            st.code(err_text[-3000:], language=None, wrap_lines=True)


def delete_form(selected: str) -> None:
    """A launch that failed, or was stopped, before its first epoch saved nothing: its folder can go (runs that
    saved an epoch cannot be deleted here)."""
    with st.popover("Delete this run", icon=":material/delete:"):
        st.markdown(f"Delete **{selected}**? It saved no epoch: only its settings and log go.")
        if st.button("Delete", key=f"delete-{selected}", type="primary"):
            try:
                remove_failed_run(selected)
            except (LaunchError, OSError) as exc:
                st.error(f"Not deleted: {exc}")
            else:
                st.session_state["flash"] = f"Deleted {selected}."
                st.session_state.pop("active_run", None)
                st.rerun()


def resume_form(selected: str, run_dir: str, config: dict, epochs_done: int, completed: bool) -> None:
    """Resume a run that ended early, or give a completed one more epochs (core.train --resume --epochs N)."""
    at_least = epochs_done + 1 if completed else 1
    left, right = st.columns([1, 2])
    more = left.number_input("Epochs in total", at_least, 100000, max(at_least, int(config.get("epochs", 1))), 1,
                             key=f"resume-epochs-{selected}")
    # The run's own data unless changed: a folder that moved, or one fixed after a refused resume (--data).
    data = right.text_input("Data to go on with", shown_path(str(config.get("data", ""))),
                            key=f"resume-data-{selected}",
                            help=field_help("data", "The folder this run trains and validates on from here."))
    label = "Train more epochs" if completed else "Resume this run"
    if st.button(label, help="Continue from last.pt at the next epoch; a cosine schedule anneals over the new "
                             "total from there."):
        try:
            resumed = TrainConfig.from_dict({**config, "resume": True, "epochs": int(more),
                                             "data": resolve(data)}).check_data()
            start_run(resumed, selected)
        except (ConfigError, LaunchError, OSError) as exc:
            st.error(f"Not resumed: {exc}")
        else:
            st.session_state["active_run"] = selected
            first = epochs_done + 1
            anneals = config.get("scheduler") == "cosine" and completed
            st.session_state["flash"] = (f"{selected} goes on from epoch {first} to {int(more)}" if int(more) > first
                                         else f"{selected} goes on with epoch {first}") + \
                (f" (it had {epochs_done})" if completed else "") + \
                (f"; its cosine schedule now anneals over {int(more)} epochs." if anneals else ".")
            wait_until_started(run_dir, timeout=20)
            st.rerun()


@st.fragment(run_every=2 if polling else None)
def runs_view() -> None:
    runs = known_runs()
    if not runs:
        return
    events_of = {name: read_events(os.path.join(run_dir_for(name), "log.jsonl")) for name in runs}
    statuses = {name: run_status(run_dir_for(name), events_of[name]) for name in runs}
    if any(s["state"] == "running" for s in statuses.values()) != polling:
        st.rerun()  # a run started or ended: redraw the page, polling only while something runs
    running = [n for n in runs if statuses[n]["state"] == "running"]
    active = st.session_state.get("active_run")
    # Set before the widget exists: a just-launched run is shown even if another was picked before.
    st.session_state["run_picker"] = active if active in runs else (running[0] if running else runs[0])
    st.subheader("Runs")
    selected = st.selectbox("Run", runs, key="run_picker", on_change=remember_choice,
                            format_func=lambda n: f"{n} ({statuses[n]['state']})")
    run_dir = run_dir_for(selected)
    status = statuses[selected]
    config, history, problem = read_run(run_dir)
    if problem:
        st.warning(f"Some files of {selected} cannot be read ({problem}); showing what can be.")
    epochs = status["epochs"] or config.get("epochs") or 1
    run_header(selected, run_dir, status, epochs)
    run_output(selected, run_dir, status, epochs, events_of[selected], history)
    if status["state"] in ("failed", "died", "new", "stopped") and not any(
            os.path.exists(os.path.join(run_dir, f)) for f in SAVED_FILES):
        delete_form(selected)
    if status["state"] in ("stopped", "died", "failed", "completed") \
            and os.path.exists(os.path.join(run_dir, "last.pt")) and config:
        resume_form(selected, run_dir, config, status["epochs_done"], status["state"] == "completed")


runs_view()

# ------------------------------------------------------------------ new run
with st.expander("New run", expanded=not runs_at_start, icon=":material/add:"):
    defaults = TrainConfig()
    data_dir = st.text_input("Data folder", value=defaults.data, key=f"{KEPT}data",
                             help=field_help("data", "Course layout: train/ and valid/ image folders with "
                                                     "train.json and valid.json."))
    a_file = os.path.isfile(resolve(data_dir))
    missing = [] if a_file else [f for f in ("train.json", "valid.json")
                                 if not os.path.isfile(os.path.join(resolve(data_dir), f))]
    if a_file:
        st.warning(f"`{data_dir}` is a file: name the dataset folder (train/ with train.json, valid/ with "
                   f"valid.json), e.g. `{os.path.dirname(data_dir) or '.'}`")
    elif missing and not os.path.isdir(resolve(data_dir)):
        st.warning(f"No folder at `{data_dir}`: check the path, or generate a synthetic dataset there:")
    elif missing:
        st.warning(f"No dataset at `{data_dir}` yet ({' and '.join(missing)} missing). Generate a synthetic one:")
    if missing:
        columns = st.columns(4)
        n_train = columns[0].number_input("train images", 1, 200_000, 2000, 100, key=f"{KEPT}gen-train")
        n_valid = columns[1].number_input("valid images", 1, 50_000, 300, 50, key=f"{KEPT}gen-valid")
        n_test = columns[2].number_input("test images", 0, 50_000, 300, 50, key=f"{KEPT}gen-test")
        seed = columns[3].number_input("seed", 0, 2**31 - 1, 0, 1, key=f"{KEPT}gen-seed")
        if st.button("Generate synthetic dataset", type="primary"):
            bar = st.progress(0.0, "Generating...")
            try:
                manifest = generate_dataset(resolve(data_dir), {"train": int(n_train), "valid": int(n_valid),
                                                                "test": int(n_test)}, seed=int(seed),
                                            fonts=usable_fonts(),
                                            progress=lambda d, t: bar.progress(d / t, f"{d}/{t}"))
            except (SynthError, OSError) as exc:
                st.error(f"Could not generate the dataset: {exc}")
            else:
                st.session_state["flash"] = (f"Wrote {sum(manifest['counts'].values())} images to {data_dir} "
                                             f"({manifest['images_per_s']} images/s).")
                st.rerun()

    cuda = torch_cuda_available()
    presets = list(PRESETS)
    preset = st.radio("Start from", presets, index=presets.index(default_preset(cuda)), horizontal=True,
                      key=f"{KEPT}preset",
                      help="Fills the fields below with what fits the machine; this one has "
                           + ("a CUDA GPU." if cuda else "no GPU: the CPU preset trains in minutes, the reference in days."))
    start = dataclasses.replace(defaults, **PRESETS[preset])
    known_images = count_images(resolve(data_dir))
    if known_images:  # the CPU preset warms up for a tenth of a run on 2,000 images: a tenth of this one instead
        start = dataclasses.replace(start, warmup_steps=min(start.warmup_steps,
                                                            optimisation_steps(start, known_images) // 10))
    top = st.columns([2, 1, 1])
    arch = top[0].selectbox(FIELDS["arch"].metadata["label"], list(ARCHITECTURES),
                            index=list(ARCHITECTURES).index(start.arch), key=f"{KEPT}arch-{preset}",
                            help=field_help("arch"))
    top[0].caption(HINTS.get(arch, ""))
    scheduler = top[1].selectbox(FIELDS["scheduler"].metadata["label"], list(SCHEDULERS), key=f"{KEPT}scheduler",
                                 help=field_help("scheduler"))
    if f"{KEPT}run_name" not in st.session_state:
        st.session_state[f"{KEPT}run_name"] = f"run-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    run_name = top[2].text_input("Run name", key=f"{KEPT}run_name",
                                 help=field_help("out", f"Folder under {shown_path(runs_root())}/: letters, digits, "
                                                        "'-', '_' and '.' only."))

    # Plain widgets, not a form: the warnings below follow every change before the launch.
    with st.container(border=True):
        values = {"data": data_dir, "arch": arch, "scheduler": scheduler}
        for group, names in FORM_GROUPS.items():
            names = names[scheduler] if isinstance(names, dict) else names
            st.markdown(f"**{group}**" + (f" ({scheduler})" if group == "Schedule" else ""))
            columns = st.columns(4)
            for index, name in enumerate(names):
                with columns[index % 4]:
                    # The warm-up follows the data folder (see start); the other fields keep what was typed.
                    key = f"{KEPT}{name}-{preset}" + (f"-{known_images}" if name == "warmup_steps" else "")
                    values[name] = config_widget(FIELDS[name], getattr(start, name), key=key)

    try:
        preview = TrainConfig.from_dict({**values, "data": resolve(values["data"]), "out": run_name or "?"})
        train_images = count_images(resolve(values["data"]))
    except (ConfigError, OSError, ValueError):
        preview, train_images = None, 0
    form_warnings(preview, train_images, cuda, values.get("device"), preset)

    if st.button("Launch training", type="primary"):
        try:
            values["data"] = resolve(values["data"])
            config = TrainConfig.from_dict({**values, "out": run_name or "?"}).check_data().check_weights()
            record = start_run(config, run_name)
        except (ConfigError, LaunchError, OSError) as exc:
            st.error(f"Not launched: {exc}{form_fields(exc)}")
        else:
            wait_until_started(record["run_dir"], timeout=20)
            st.session_state["active_run"] = run_name
            st.session_state["flash"] = f"Launched {run_name} (pid {record['pid']}): it streams under Runs."
            del st.session_state[f"{KEPT}run_name"]  # the next run gets a fresh name; its other settings stay
            st.rerun()
