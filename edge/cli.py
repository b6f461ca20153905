"""The ``humwatch`` command line.

Edge commands (batch, stream, live, devices, bench, bundle) run with the base install. The
workstation commands live in the train and export packages and are imported only when called,
so ``humwatch --help`` works on a Pi and a missing torch gives a clear message, not a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

# name -> (module, attribute, one-line help) of the commands that need the `train` extra.
WORKSTATION_COMMANDS = {
    "synth": ("train.cli", "synth", "Write deterministic synthetic recordings (44.1 kHz AAC .m4a)."),
    "prepare": ("train.cli", "prepare", "Scan samples/ and write the file and window manifests."),
    "train": ("train.cli", "train", "Train the classifier on frozen BEATs embeddings (stage 1, optional stage 2)."),
    "thresholds": ("train.cli", "thresholds", "Choose t_ac / t_fridge on the validation files of a run."),
    "evaluate": ("train.cli", "evaluate", "Per-file predictions and metrics of a run."),
    "export": ("export.cli", "export", "Export a run to an ONNX bundle, parity-checked against torch."),
    "demo": ("train.demo", "demo", "The whole chain on synthetic recordings, no downloads."),
}
TRAIN_EXTRA_MODULES = {"torch", "torchaudio", "onnx", "onnxscript", "pandas", "pyarrow", "tqdm"}
EDGE_COMMANDS = ("batch", "stream", "live", "devices", "bench", "bundle")  # in edge.commands


class HumwatchGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*EDGE_COMMANDS, *WORKSTATION_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in EDGE_COMMANDS:
            return getattr(importlib.import_module("edge.commands"), name)
        if name not in WORKSTATION_COMMANDS:
            return None
        missing = sorted(module for module in TRAIN_EXTRA_MODULES if importlib.util.find_spec(module) is None)
        if missing:
            raise click.UsageError(
                f"'humwatch {name}' runs on the workstation and needs {', '.join(missing)}, which is not installed. "
                "In a clone run 'uv sync' (or: pip install 'humwatch[train]')."
            )
        module, attribute, _ = WORKSTATION_COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = importlib.import_module("edge.commands")
        edge_rows = [(name, getattr(commands, name).get_short_help_str(70)) for name in sorted(EDGE_COMMANDS)]
        workstation_rows = [(name, text) for name, (_, _, text) in sorted(WORKSTATION_COMMANDS.items())]
        for title, rows in (("Edge commands (base install, no torch)", edge_rows),
                            ("Workstation commands (need the train extra)", workstation_rows)):
            with formatter.section(title):
                formatter.write_dl(rows)


@click.group(cls=HumwatchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="humwatch")
def main() -> None:
    """humwatch: is the air conditioner or the fridge running? (ac-on | fridge-on | both-off)"""
