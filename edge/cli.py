"""The ``humwatch`` command line.

Edge commands (edge.commands) run with the base install. Workstation commands (train.cli,
export.cli) need the `train` extra; their modules import nothing heavy until a command runs, so
``humwatch --help`` works on a Pi and a missing torch gives a clear message, not a traceback.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re

import click

EDGE_MODULES = ("edge.commands", "edge.container.addon_folder")
WORKSTATION_MODULES = ("train.cli", "export.cli")
SECTIONS = (  # `humwatch --help` lists the commands in the order the work goes; every command is in one section
    ("Try it", ("demo", "synth")),
    ("Train on a workstation, in this order", ("prepare", "train", "thresholds", "evaluate", "report", "distill", "export",
                                               "bundle")),
    ("Run at home", ("devices", "live", "stream", "batch", "history")),
    ("Teach it: the home's clips back into training", ("pull", "retrain", "judge", "push", "rollback")),
    ("Measure", ("bench-bundle", "bench-monitors", "bench-live", "bench-training", "bench-retrain", "bench-cluster")),
    ("Install", ("addon-folder",)),
)
DESCRIPTION_WIDTH = 64  # each command's first sentence fits the list's description column (60-64 wide at 80)


def _commands(modules: tuple[str, ...]) -> dict[str, click.Command]:
    return {command.name: command for module in modules for command in importlib.import_module(module).COMMANDS}


def missing_train_extra() -> list[str]:
    """The packages of the `train` extra (as pyproject.toml lists them) that cannot be imported."""
    names = [re.match(r"[A-Za-z0-9_.-]+", requirement).group() for requirement in importlib.metadata.requires("humwatch") or []
             if re.search(r"extra\s*==\s*['\"]train['\"]", requirement)]
    provided: dict[str, set[str]] = {}  # distribution name (lower case) -> the top-level modules it installs
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            provided.setdefault(distribution.lower(), set()).add(module)

    def importable(name: str) -> bool:
        modules = provided.get(name.lower(), set())
        main_module = name.lower().replace("-", "_") if name.lower().replace("-", "_") in modules else min(modules, default=None)
        return main_module is not None and importlib.util.find_spec(main_module) is not None

    return [name for name in names if not importable(name)]


class HumwatchGroup(click.Group):
    """Edge and workstation commands, listed by SECTIONS; the workstation's are refused with a clear message
    on an edge-only install."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for _, names in SECTIONS for name in names]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        edge = _commands(EDGE_MODULES)
        if name in edge:
            return edge[name]
        workstation = _commands(WORKSTATION_MODULES)
        if name not in workstation:
            return None
        missing = missing_train_extra()
        if missing:
            raise click.UsageError(
                f"'humwatch {name}' runs on the workstation and needs {', '.join(missing)}, which is not installed. "
                "In a clone run 'uv sync' (or: pip install 'humwatch[train]')."
            )
        return workstation[name]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = {**_commands(EDGE_MODULES), **_commands(WORKSTATION_MODULES)}
        for title, names in SECTIONS:
            with formatter.section(title):
                formatter.write_dl([(name, commands[name].get_short_help_str(DESCRIPTION_WIDTH)) for name in names])
        where = "not installed here: need humwatch[train]" if missing_train_extra() else "the train extra"
        formatter.write_paragraph()
        workstation = [name for _, names in SECTIONS for name in names if name in _commands(WORKSTATION_MODULES)]
        formatter.write_text(f"Workstation commands ({where}): {', '.join(workstation)}.")


@click.group(cls=HumwatchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="humwatch")
def main() -> None:
    """humwatch: which appliances are running? By default the AC and the fridge (ac-on | fridge-on | both-off);
    any appliance you record (ac-on-fridge-off-dehumidifier-on-day.m4a) is yours to add."""
if __name__ == "__main__":
    main()
