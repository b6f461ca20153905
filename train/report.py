"""A run as pictures: one self-contained HTML file (images inline, opens from disk, no server).

For each validation file p_ac and p_fridge over time against the thresholds and the hysteresis
band, with its true state and the states the edge rule gives; F1 against each threshold with the
chosen one and its margin; the per-daypart table and the day/night cross-split; the training
curves; and a banner when the encoder is not the real BEATs architecture (the demo's stand-in).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the object API: no display, no global state

from edge.core.agreement import streamed_statuses
from edge.core.decision import decide_file
from edge.core.files import write_text_atomic
from edge.core.labels import state_of
from train.beats import BeatsConfig
from train.evaluate import CROSS_SPLIT_COLUMNS, cross_split, cross_split_rows
from train.metrics import METRIC_COLUMNS, file_metrics, file_table, metric_rows
from train.run import Run
from train.thresholds import GRID, best_run, f1_curve

REPORT = "report.html"
COLORS = {"ac": "#d62728", "fridge": "#1f77b4"}
ARCHITECTURE_KEYS = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads", "embed_dim")


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _image(figure, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(figure)}">'


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(row.get(c, ''))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def is_stand_in(run: Run) -> bool:
    """True when the encoder is not the BEATs_iter3_plus_AS2M architecture (the demo's random stand-in,
    a test fixture): its figures say nothing about what BEATs can hear."""
    real, used = BeatsConfig(), run.config.beats_cfg
    return any(getattr(used, key) != getattr(real, key) for key in ARCHITECTURE_KEYS)


def _traces(run: Run) -> str:
    decision, window = run.decision, run.window
    predictions = run.val_predictions()
    figures = []
    for recording, group in predictions.groupby("recording_id", sort=True):
        group = group.sort_values("window_index")
        t = (group.window_index.to_numpy() * window.hop_sec + window.window_sec) / 60
        probs = group[["p_ac", "p_fridge"]].to_numpy()
        true_state = state_of(bool(group.ac.iloc[0]), bool(group.fridge.iloc[0]))
        file_state = decide_file(probs, decision).status
        streamed = streamed_statuses(probs, decision, window.hop_sec)
        figure = Figure(figsize=(9, 2.6))
        axis = figure.subplots()
        for column, label, t_file, (on, off) in (
                (0, "ac", decision.t_ac, (decision.ac_on, decision.ac_off)),
                (1, "fridge", decision.t_fridge, (decision.fridge_on, decision.fridge_off))):
            axis.plot(t, probs[:, column], color=COLORS[label], label=f"p_{label}")
            axis.axhline(t_file, color=COLORS[label], linestyle="--", linewidth=1, label=f"t_{label} {t_file:.2f}")
            axis.axhspan(off, on, color=COLORS[label], alpha=0.08, label=f"{label} hysteresis {off:.2f}-{on:.2f}")
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("minutes (window end)")
        axis.set_ylabel("probability")
        axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
        ok = "right" if file_state == true_state else "WRONG"
        axis.set_title(f"{recording}: true {true_state}; edge rule on the file: {file_state} ({ok}); "
                       f"streamed, debounced at the end: {streamed[-1]}", fontsize=9)
        figures.append(f'<figure class="trace" data-recording="{html.escape(recording)}">'
                       f"{_image(figure, f'probabilities of {recording}')}</figure>")
    return "\n".join(figures)


def _f1_curves(run: Run) -> str:
    predictions = run.val_predictions()
    decision, start = run.decision, run.config.decision  # start: where choose_thresholds began
    files = file_table(predictions, predictions[["p_ac", "p_fridge"]].to_numpy(), decision)
    figure = Figure(figsize=(9, 2.6))
    axes = figure.subplots(1, 2)
    for axis, label, chosen in ((axes[0], "ac", decision.t_ac), (axes[1], "fridge", decision.t_fridge)):
        scores = f1_curve(files[label].to_numpy(), files[f"p_{label}"].to_numpy())
        low, high = (float(GRID[i]) for i in best_run(scores, getattr(start, f"t_{label}")))
        axis.plot(GRID, scores, color=COLORS[label])
        axis.axvspan(low, high, color=COLORS[label], alpha=0.1)
        axis.axvline(chosen, color="black", linestyle="--", linewidth=1)
        axis.set_title(f"{label}: chosen {chosen:.2f}, best F1 {scores.max():.2f} from {low:.2f} to {high:.2f} "
                       f"(margin {min(chosen - low, high - chosen):.2f})", fontsize=8)
        axis.set_xlabel(f"t_{label}")
        axis.set_ylabel("file-level F1")
        axis.set_ylim(-0.02, 1.02)
    return _image(figure, "F1 against threshold")


def _curves(run: Run) -> str:
    epochs = run.epochs()
    x = np.arange(1, len(epochs) + 1)
    figure = Figure(figsize=(9, 2.6))
    losses, scores = figure.subplots(1, 2)
    losses.plot(x, [e["train_loss"] for e in epochs], label="train loss")
    losses.plot(x, [e["val_loss"] for e in epochs], label="validation loss")
    for key in ("f1_ac", "f1_fridge", "state_accuracy"):
        scores.plot(x, [e[key] for e in epochs], label=key)
    stage2 = [i + 1 for i, e in enumerate(epochs) if e["stage"] == "stage2"]
    for axis in (losses, scores):
        if stage2:
            axis.axvspan(stage2[0] - 0.5, stage2[-1] + 0.5, color="grey", alpha=0.15, label="stage 2")
        axis.set_xlabel("epoch")
        axis.legend(fontsize=7)
    scores.set_ylim(-0.02, 1.02)
    return _image(figure, "training curves")


def render_report(run: Run) -> Path:
    """Write <run>/report.html and return its path."""
    decision, predictions = run.decision, run.val_predictions()
    metrics = file_metrics(predictions, predictions[["p_ac", "p_fridge"]].to_numpy(), decision)
    splits = cross_split(run.path.parent)
    cross = (_table(cross_split_rows(splits), CROSS_SPLIT_COLUMNS) if {"day", "night"} <= set(splits) else "<p>Train once with <code>--val-daypart day</code> and once with "
             "<code>--val-daypart night</code> to see the cross-split here.</p>")
    stage2 = run.config.stage2
    banner = ('<p class="banner">This run\'s encoder is not the BEATs_iter3_plus_AS2M architecture: a stand-in (the demo\'s '
              "random one, or a test fixture). These pictures show the pipeline working, not what BEATs can hear.</p>"
              if is_stand_in(run) else "")
    thresholds = (f"t_ac {decision.t_ac:.2f} (hysteresis {decision.ac_off:.2f}-{decision.ac_on:.2f}), "
                  f"t_fridge {decision.t_fridge:.2f} (hysteresis {decision.fridge_off:.2f}-{decision.fridge_on:.2f})"
                  + ("" if run.thresholds else " — defaults: run 'humwatch thresholds' to choose them"))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>humwatch run {html.escape(run.path.name)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:1em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
.banner{{background:#fff3cd;border:1px solid #e0b000;padding:.6em}} figure{{margin:.5em 0}} img{{max-width:100%}}</style>
</head><body>
<h1>Run {html.escape(run.path.name)}</h1>
{banner}
<p>Validated on {html.escape(", ".join(r.recording_id for r in run.recordings("validation")))}.
Decision: <span class="thresholds">{thresholds}</span>; running median {decision.median_sec:g} s, debounce
{decision.debounce_sec:g} s.</p>
<h2>Validation files</h2>
{_traces(run)}
<h2>F1 against threshold</h2>
{_f1_curves(run)}
<h2>Per daypart</h2>
{_table(metric_rows(metrics), METRIC_COLUMNS)}
<h2>Cross-split</h2>
{cross}
<h2>Training</h2>
{_curves(run)}
<p>Stage 2: {html.escape(stage2.verdict) if stage2 else "not run"}.</p>
</body></html>
"""
    path = run.path / REPORT
    write_text_atomic(path, page)
    return path
