"""Schedulers page: compare the per-epoch curves of stored runs (CosineAnnealingLR vs StepLR)."""

import plotly.graph_objects as go
import plotly.colors
import streamlit as st

from core.curves import (LOG_SCALE_METRICS, METRICS, UNSMOOTHED_METRICS, VALIDATION_METRICS, best_epochs, curves_frame,
                         default_selection, load_runs, smooth, summary)
from pages import ensure_routed

ensure_routed()

st.title("Compare learning-rate schedulers")
st.caption("Validation mAP and training curves per epoch. The shipped pair was trained with the same "
           "configuration, seed and per-epoch subsets; only the scheduler differs.")

runs, skipped = load_runs()
for name, reason in skipped.items():
    st.warning(f"Run **{name}** was skipped: its files are unreadable ({reason}).")
if not runs:
    st.info("No runs are stored yet: neither shipped curves in `checkpoints/curves/` nor runs in `runs/`. "
            "Start one on the **Train** page.")
    st.stop()

# A run with no finished epoch has no curve: one still going (or about to) will have one, one that ended will not.
coming = [run.label for run in runs if not run.history and run.state in ("running", "new")]
ended = [f"{run.label} ({run.state})" for run in runs if not run.history and run.state not in ("running", "new")]
runs = [run for run in runs if run.history]
if coming:
    st.caption(f"Not listed until they finish an epoch (running or about to start): {', '.join(coming)}.")
if ended:
    st.caption(f"Not listed, and will not be: ended without finishing an epoch: {', '.join(ended)}.")
if not runs:
    st.info("No run has finished an epoch yet.")
    st.stop()
labels = [run.label for run in runs]
with st.sidebar:
    chosen = st.multiselect("Runs", labels, default=default_selection(runs) or labels[:2],
                            help="Shipped curves first, then runs/ folders; your newest cosine and step runs are "
                                 "picked too.")
    metric = st.selectbox("Metric", list(METRICS), format_func=lambda m: f"{m}: {METRICS[m]}")
    weight = st.slider("Smoothing", 0.0, 0.95, 0.0, 0.05, disabled=metric in UNSMOOTHED_METRICS,
                       help="Exponential moving average (as in TensorBoard); the raw curve stays as a faint line. "
                            "Not applied to the learning rate, which is a schedule rather than a measurement.")
    if metric in UNSMOOTHED_METRICS:
        weight = 0.0
    log_scale = st.toggle("Log scale", value=metric == "lr", disabled=metric not in LOG_SCALE_METRICS,
                          help="For losses and the learning rate.")

selected = [run for run in runs if run.label in chosen]
if not selected:
    st.info("Pick at least one run in the sidebar.")
    st.stop()

frame = curves_frame(selected)
best = best_epochs(selected)
palette = plotly.colors.qualitative.D3
figure = go.Figure()
for index, run in enumerate(selected):
    colour = palette[index % len(palette)]
    part = frame[frame["run"] == run.label]
    if part.empty or part[metric].isna().all():
        continue
    epochs, values = part["epoch"].tolist(), part[metric].tolist()
    smoothed = smooth(values, weight) if weight > 0 else values
    if weight > 0:
        figure.add_trace(go.Scatter(x=epochs, y=values, mode="lines", line={"color": colour, "width": 1},
                                    opacity=0.3, name=f"{run.label} (raw)", legendgroup=run.label,
                                    showlegend=False, hoverinfo="skip"))
    figure.add_trace(go.Scatter(x=epochs, y=smoothed, mode="lines+markers", line={"color": colour, "width": 2.5},
                                marker={"size": 5}, name=run.label, legendgroup=run.label,
                                hovertemplate="%{y:.4g}"))
    if metric in VALIDATION_METRICS and run.label in best and best[run.label] in epochs:
        at = epochs.index(best[run.label])
        # On the measured value: the smoothed line passes below a peak.
        figure.add_trace(go.Scatter(x=[epochs[at]], y=[values[at]], mode="markers",
                                    marker={"symbol": "star", "size": 16, "color": colour,
                                            "line": {"color": "black", "width": 1}},
                                    name=f"{run.label}: best mAP at epoch {epochs[at]}", legendgroup=run.label,
                                    hovertemplate="best mAP epoch"))
figure.update_layout(hovermode="x unified", height=480, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                     title=METRICS[metric], legend={"orientation": "h", "y": -0.2},
                     xaxis_title="epoch", yaxis_title=metric)
figure.update_xaxes(dtick=1 if frame["epoch"].max() <= 30 else None)
if log_scale and metric in LOG_SCALE_METRICS:
    figure.update_yaxes(type="log", dtick="D2")  # ticks at 1, 2 and 5 of each decade: every one labelled, none overlap
if metric == "lr":  # one notation on every tick (plotly would mix 0.001 with 100µ)
    figure.update_yaxes(exponentformat="e", showexponent="all", tickformat=".0e")
st.plotly_chart(figure, key="curves")

st.subheader("Summary")
st.dataframe(summary(selected), hide_index=True, width="stretch",
             column_config={"best mAP": st.column_config.NumberColumn(format="%.4f"),
                            "final mAP": st.column_config.NumberColumn(format="%.4f"),
                            "final lr": st.column_config.NumberColumn(format="%.2e")})
st.download_button("Download curves (CSV)", frame.to_csv(index=False).encode("utf-8"), "scheduler_curves.csv",
                   "text/csv", help="One row per run and epoch, every recorded metric.")
