"""A run as pictures: one self-contained HTML file (images inline, opens from disk, no server).

For each validation file, one chart per appliance (the run's labels): its probability over time
against its threshold and hysteresis band, and what the file's name says of it; below them the
debounced state streamed hop by hop among the run's statuses; its true state and the states the
edge rule gives. Per appliance F1 against its threshold with the chosen one and its margin (over the
files that name it), and a warning for each appliance no threshold separates; the per-daypart table
and the day/night cross-split; the training curves; and a banner when the encoder is not the real
BEATs architecture (the demo's stand-in).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the object API: no display, no global state

from edge.core.agreement import streamed_statuses
from edge.core.decision import DecisionConfig, decide_file, level_name
from edge.core.files import write_text_atomic
from edge.core.labels import Appliances
from train.beats import BeatsConfig
from train.evaluate import cross_split, cross_split_columns, cross_split_rows
from train.manifests import named_labels
from train.metrics import file_metrics, file_table, metric_columns, metric_rows, probability_columns
from train.run import Run
from train.thresholds import GRID, best_run, f1_curve, unseparated

REPORT = "report.html"
SEED_COLORS = {"ac": "#d62728", "fridge": "#1f77b4"}
PALETTE = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
ARCHITECTURE_KEYS = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads", "embed_dim")


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _image(figure, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{_png(figure)}">'


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:  # None: a figure no file counts in (no validation file names the appliance)
        return f"{value:.3f}" if isinstance(value, float) else "n/a" if value is None else html.escape(str(value))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(row.get(c, ''))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def is_stand_in(run: Run) -> bool:
    """True when the encoder is not the BEATs_iter3_plus_AS2M architecture (the demo's random stand-in,
    a test fixture): its figures say nothing about what BEATs can hear."""
    real, used = BeatsConfig(), run.config.beats_cfg
    return any(getattr(used, key) != getattr(real, key) for key in ARCHITECTURE_KEYS)


def colors(names: tuple[str, ...]) -> dict[str, str]:
    """A colour per appliance: the seed's own, the others in PALETTE's order."""
    others = itertools.cycle(PALETTE)
    return {name: SEED_COLORS.get(name) or next(others) for name in names}


def levels_text(decision: DecisionConfig) -> str:
    """Each appliance's threshold and hysteresis band: t_ac 0.75 (hysteresis 0.60-0.80), t_fridge ..."""
    return ", ".join(f"{level_name(name, 'threshold')} {level.threshold:.2f} (hysteresis {level.off:.2f}-{level.on:.2f})"
                     for name, level in decision.levels.items())


def _trace(recording: str, group, decision: DecisionConfig, hop_sec: float, window_sec: float) -> str:
    """One validation file: a chart per appliance, then the streamed debounced state."""
    appliances = decision.appliances
    names, palette = appliances.names, colors(appliances.names)
    t = (group.window_index.to_numpy() * hop_sec + window_sec) / 60
    probs = group[probability_columns(names)].to_numpy()
    named = named_labels(group.iloc[0], names)
    true_state = appliances.status(named)
    file_state = decide_file(probs, decision).status
    streamed = streamed_statuses(probs, decision, hop_sec)
    figure = Figure(figsize=(9, 1.5 * len(names) + 1.3))
    axes = figure.subplots(len(names) + 1, 1, sharex=True, height_ratios=[2] * len(names) + [1.4])
    for axis, (column, name) in zip(axes, enumerate(names)):
        level, color = decision.levels[name], palette[name]
        axis.plot(t, probs[:, column], color=color, label=f"p_{name}")
        axis.axhline(level.threshold, color=color, linestyle="--", linewidth=1, label=f"{level_name(name, 'threshold')} {level.threshold:.2f}")
        axis.axhspan(level.off, level.on, color=color, alpha=0.08, label=f"hysteresis {level.off:.2f}-{level.on:.2f}")
        axis.set_ylim(-0.02, 1.02)
        axis.set_ylabel(name)
        said = {True: "on", False: "off"}.get(named.get(name), "not named")
        axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title=f"name: {said}", title_fontsize=7)
    states = axes[-1]
    states.step(t, [appliances.statuses.index(status) for status in streamed], where="post", color="black")
    states.set_yticks(range(len(appliances.statuses)), appliances.statuses, fontsize=7)
    states.set_ylim(len(appliances.statuses) - 0.5, -0.5)  # priority order from the top
    states.set_ylabel("streamed", fontsize=8)
    states.set_xlabel("minutes (window end)")
    truth = (f"true {true_state}; edge rule on the file: {file_state} ({'right' if file_state == true_state else 'WRONG'})"
             if true_state else f"true state unknown (the name leaves out {', '.join(n for n in names if n not in named)}); "
             f"edge rule on the file: {file_state}")
    axes[0].set_title(f"{recording}: {truth}; streamed, debounced at the end: {streamed[-1]}", fontsize=9)
    return (f'<figure class="trace" data-recording="{html.escape(recording)}">'
            f"{_image(figure, f'probabilities of {recording}')}</figure>")


def _traces(run: Run) -> str:
    decision, window = run.decision, run.window
    return "\n".join(_trace(recording, group.sort_values("window_index"), decision, window.hop_sec, window.window_sec)
                     for recording, group in run.val_predictions().groupby("recording_id", sort=True))


def _f1_curves(run: Run) -> str:
    """Per appliance F1 against its threshold over the validation files that name it."""
    predictions = run.val_predictions()
    decision, start = run.decision, run.config.decision  # start: where choose_thresholds began
    names = decision.appliances.names
    files = file_table(predictions, predictions[probability_columns(names)].to_numpy(), decision)
    palette = colors(names)
    figure = Figure(figsize=(4.5 * len(names), 2.6))
    for axis, name in zip(figure.subplots(1, len(names), squeeze=False)[0], names):
        chosen = decision.levels[name].threshold
        axis.axvline(chosen, color="black", linestyle="--", linewidth=1)
        axis.set_xlabel(level_name(name, "threshold"))
        axis.set_ylabel("file-level F1")
        axis.set_ylim(-0.02, 1.02)
        named = files[files[name].notna()]
        if named.empty:
            axis.set_title(f"{name}: chosen {chosen:.2f}\nno validation file names it", fontsize=8)
            continue
        scores = f1_curve(named[name].to_numpy(), named[f"p_{name}"].to_numpy())
        low, high = (float(GRID[i]) for i in best_run(scores, start.levels[name].threshold))
        axis.plot(GRID, scores, color=palette[name])
        axis.axvspan(low, high, color=palette[name], alpha=0.1)
        axis.set_title(f"{name}: chosen {chosen:.2f}, best F1 {scores.max():.2f}\nfrom {low:.2f} to {high:.2f} "
                       f"(margin {min(chosen - low, high - chosen):.2f}, {len(named)} of {len(files)} files)", fontsize=8)
    return _image(figure, "F1 against threshold")


def _curves(run: Run, appliances: Appliances) -> str:
    epochs = run.epochs()
    x = np.arange(1, len(epochs) + 1)
    figure = Figure(figsize=(9, 2.6))
    losses, scores = figure.subplots(1, 2)
    losses.plot(x, [e["train_loss"] for e in epochs], label="train loss")
    losses.plot(x, [e["val_loss"] for e in epochs], label="validation loss")
    for key in (*(f"f1_{name}" for name in appliances.names), "state_accuracy"):
        scores.plot(x, [np.nan if e.get(key) is None else e[key] for e in epochs], label=key)
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
    names = decision.appliances.names
    probs = predictions[probability_columns(names)].to_numpy()
    metrics = file_metrics(predictions, probs, decision)
    warnings = "".join(f'<p class="banner unseparated">{html.escape(note)}</p>\n'
                       for note in unseparated(file_table(predictions, probs, decision), decision).values())
    splits = cross_split(run.path.parent)
    cross = (_table(cross_split_rows(splits), cross_split_columns(splits)) if {"day", "night"} <= set(splits) else "<p>Train once with <code>--val-daypart day</code> and once with "
             "<code>--val-daypart night</code> to see the cross-split here.</p>")
    stage2 = run.config.stage2
    banner = ('<p class="banner">This run\'s encoder is not the BEATs_iter3_plus_AS2M architecture: a stand-in (the demo\'s '
              "random one, or a test fixture). These pictures show the pipeline working, not what BEATs can hear.</p>"
              if is_stand_in(run) else "")
    thresholds = levels_text(decision) + ("" if run.thresholds else " — defaults: run 'humwatch thresholds' to choose them")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>humwatch run {html.escape(run.path.name)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:1em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
.banner{{background:#fff3cd;border:1px solid #e0b000;padding:.6em}} figure{{margin:.5em 0}} img{{max-width:100%}}</style>
</head><body>
<h1>Run {html.escape(run.path.name)}</h1>
{banner}
<p>Validated on {html.escape(", ".join(r.recording_id for r in run.recordings("validation")))}.
Appliances, in priority order: {html.escape(", ".join(decision.appliances.priority))} (statuses
{html.escape(", ".join(decision.appliances.statuses))}).
Decision: <span class="thresholds">{thresholds}</span>; running median {decision.median_sec:g} s, debounce
{decision.debounce_sec:g} s.</p>
{warnings}<h2>Validation files</h2>
{_traces(run)}
<h2>F1 against threshold</h2>
{_f1_curves(run)}
<h2>Per daypart</h2>
{_table(metric_rows(metrics), metric_columns(metrics))}
<h2>Cross-split</h2>
{cross}
<h2>Training</h2>
{_curves(run, decision.appliances)}
<p>Stage 2: {html.escape(stage2.verdict) if stage2 else "not run"}.</p>
</body></html>
"""
    path = run.path / REPORT
    write_text_atomic(path, page)
    return path
