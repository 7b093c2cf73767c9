"""Train page: launch ``python -m core.train`` in the background and watch it live."""

import dataclasses
import datetime
import os
import typing

import plotly.graph_objects as go
import streamlit as st

from core.config import TrainConfig, ConfigError
from core.events import read_events, tail_text
from core.launcher import RUN_NAME, LaunchError, run_dir_for, start_run, stop_run, wait_until_started
from core.runs import PROJECT_ROOT, read_config, read_history, run_status, runs_root
from core.synth import SynthError, generate_dataset, usable_fonts
from pages import ensure_routed

ensure_routed()

FORM_FIELDS = [f for f in dataclasses.fields(TrainConfig) if f.name not in ("out", "resume")]
HINTS = {"fasterrcnn_resnet50_fpn_v2": "the reference; several seconds per image on a CPU, use a GPU",
         "digitnet_fpn": "compact, about 20 training images/s on a 2-core CPU"}
STATE_ICONS = {"running": "🟢", "completed": "✅", "stopped": "⏹️", "failed": "❌", "died": "💀", "new": "⏳"}


def resolve(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(PROJECT_ROOT, path)


def config_widget(field: dataclasses.Field, default):
    meta, label = field.metadata, field.name.replace("_", " ")
    kind = typing.get_type_hints(TrainConfig)[field.name]
    help_text = meta["help"]
    if "choices" in meta:
        options = list(meta["choices"])
        return st.selectbox(label, options, index=options.index(default), help=help_text,
                            format_func=lambda v: f"{v}: {HINTS[v]}" if v in HINTS else v)
    if kind is bool:
        return st.checkbox(label, value=default, help=help_text)
    if kind in (int, int | None):
        value = st.number_input(label, value=default, step=1, format="%d", help=help_text,
                                placeholder="architecture default" if default is None else None)
        return None if value is None else int(value)
    if kind is float:
        return st.number_input(label, value=float(default), format="%g", step=None, help=help_text)
    return st.text_input(label, value=str(default), help=help_text)


def known_runs() -> list[str]:
    """Run folders the launcher can address (others, e.g. made by hand with spaces, are listed on the
    Schedulers page but cannot be driven from here)."""
    root = runs_root()
    if not os.path.isdir(root):
        return []
    names = [n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)) and RUN_NAME.fullmatch(n)]
    return sorted(names, key=lambda n: os.path.getmtime(os.path.join(root, n)), reverse=True)


st.title("Train a detector")
st.caption("Runs `python -m core.train` in the background (it keeps going if you close this tab); "
           "its log, progress and curves stream below. The form is the same configuration as the command line.")

# ------------------------------------------------------------------ data
defaults = TrainConfig()
data_dir = st.text_input("Data folder", value=defaults.data,
                         help="Course layout: train/ and valid/ image folders with train.json and valid.json.")
missing = [f for f in ("train.json", "valid.json") if not os.path.isfile(os.path.join(resolve(data_dir), f))]
if missing:
    st.warning(f"No dataset at `{data_dir}` yet ({' and '.join(missing)} missing). Generate a synthetic one:")
    columns = st.columns(4)
    n_train = columns[0].number_input("train images", 1, 200_000, 2000, 100)
    n_valid = columns[1].number_input("valid images", 1, 50_000, 300, 50)
    n_test = columns[2].number_input("test images", 0, 50_000, 300, 50)
    seed = columns[3].number_input("seed", 0, 2**31 - 1, 0, 1)
    if st.button("Generate synthetic dataset", type="primary"):
        bar = st.progress(0.0, "Generating...")
        try:
            manifest = generate_dataset(resolve(data_dir), {"train": int(n_train), "valid": int(n_valid),
                                                            "test": int(n_test)}, seed=int(seed),
                                        fonts=usable_fonts(), progress=lambda d, t: bar.progress(d / t, f"{d}/{t}"))
        except (SynthError, OSError) as exc:
            st.error(f"Could not generate the dataset: {exc}")
        else:
            st.success(f"Wrote {sum(manifest['counts'].values())} images to {data_dir} "
                       f"({manifest['images_per_s']} images/s).")
            st.rerun()

# ------------------------------------------------------------------ launch form
with st.form("launch"):
    st.subheader("New run")
    if "run_name" not in st.session_state:
        st.session_state["run_name"] = f"run-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    run_name = st.text_input("Run name", key="run_name",
                             help="Folder under runs/: letters, digits, '-', '_' and '.' only.")
    values = {"data": data_dir}
    columns = st.columns(3)
    for index, field in enumerate(f for f in FORM_FIELDS if f.name != "data"):
        with columns[index % 3]:
            values[field.name] = config_widget(field, getattr(defaults, field.name))
    submitted = st.form_submit_button("Launch training", type="primary")

if submitted:
    try:
        values["data"] = resolve(values["data"])
        config = TrainConfig.from_dict({**values, "out": run_name or "?"})
        record = start_run(config, run_name)
    except (ConfigError, LaunchError, OSError) as exc:
        st.error(f"Not launched: {exc}")
    else:
        wait_until_started(record["run_dir"], timeout=20)
        st.session_state["active_run"] = run_name
        st.success(f"Launched {run_name} (pid {record['pid']}).")

# ------------------------------------------------------------------ live view
runs = known_runs()
if not runs:
    st.info("No runs yet.")
    st.stop()
statuses = {name: run_status(os.path.join(runs_root(), name)) for name in runs}
running = [n for n in runs if statuses[n]["state"] == "running"]
active = st.session_state.get("active_run")
initial = active if active in runs else (running[0] if running else runs[0])
st.subheader("Runs")
selected = st.selectbox("Run", runs, index=runs.index(initial),
                        format_func=lambda n: f"{STATE_ICONS.get(statuses[n]['state'], '')} {n} "
                                              f"({statuses[n]['state']})")
run_dir = run_dir_for(selected)


@st.fragment(run_every=2)
def live_view(run_dir: str) -> None:
    status = run_status(run_dir)
    state = status["state"]
    progress = status["progress"]
    epochs = status["epochs"] or read_config(run_dir).get("epochs") or 1
    top = st.columns([3, 1])
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
    with top[1]:
        if state == "running" and st.button("Stop", key=f"stop-{run_dir}", type="secondary",
                                            help="Ends the run at the next step; last.pt keeps the last finished epoch."):
            stop_run(run_dir)
            st.toast("Stop requested")
    if state in ("failed", "died"):
        st.error(f"The run {state}: {status['message'] or 'see the log below'}")
    elif state == "stopped":
        st.info(status["message"] or "Stopped.")

    history = read_history(run_dir) if os.path.exists(os.path.join(run_dir, "history.json")) else [
        {k: v for k, v in e.items() if k not in ("event", "time")}
        for e in read_events(os.path.join(run_dir, "log.jsonl")) if e["event"] == "epoch"]
    if history:
        figure = go.Figure()
        epochs_x = [h["epoch"] for h in history]
        figure.add_trace(go.Scatter(x=epochs_x, y=[h["mAP"] for h in history], name="validation mAP",
                                    mode="lines+markers"))
        figure.add_trace(go.Scatter(x=epochs_x, y=[h["loss"] for h in history], name="training loss",
                                    mode="lines+markers", yaxis="y2"))
        figure.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10}, hovermode="x unified",
                             xaxis_title="epoch", yaxis={"title": "mAP"},
                             yaxis2={"title": "loss", "overlaying": "y", "side": "right"})
        st.plotly_chart(figure, key=f"live-{run_dir}")
    log_text = tail_text(os.path.join(run_dir, "stdout.log"), 6000)
    err_text = tail_text(os.path.join(run_dir, "stderr.log"), 3000)
    lines = [line.rsplit("\r", 1)[-1] for line in log_text.splitlines()]
    st.code("\n".join(lines[-40:]) or "(no output yet)", language=None)
    if err_text.strip() and state != "running":
        with st.expander("stderr"):
            st.code(err_text[-3000:], language=None)


live_view(run_dir)

status = statuses[selected]
if status["state"] in ("stopped", "died", "failed") and os.path.exists(os.path.join(run_dir, "last.pt")):
    more = st.number_input("Epochs in total", 1, 100000, int(read_config(run_dir).get("epochs", 1)), 1,
                           key=f"resume-epochs-{selected}")
    if st.button("Resume this run", help="Continue from last.pt at the next epoch."):
        try:
            config = TrainConfig.from_dict({**read_config(run_dir), "resume": True, "epochs": int(more)})
            start_run(config, selected)
        except (ConfigError, LaunchError, OSError) as exc:
            st.error(f"Not resumed: {exc}")
        else:
            st.session_state["active_run"] = selected
            wait_until_started(run_dir, timeout=20)
            st.rerun()
