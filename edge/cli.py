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
    """Edge and workstation commands, the latter refused with a clear message on an edge-only install."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*_commands(EDGE_MODULES), *_commands(WORKSTATION_MODULES)})

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
        workstation = ("Workstation commands (not installed here: need humwatch[train])" if missing_train_extra()
                       else "Workstation commands (the train extra)")
        for title, modules in (("Edge commands (base install, no torch)", EDGE_MODULES), (workstation, WORKSTATION_MODULES)):
            rows = [(name, command.get_short_help_str(70)) for name, command in sorted(_commands(modules).items())]
            with formatter.section(title):
                formatter.write_dl(rows)


@click.group(cls=HumwatchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="humwatch")
def main() -> None:
    """humwatch: which appliances are running? By default the AC and the fridge (ac-on | fridge-on | both-off);
    any appliance you record (ac-on-fridge-off-dehumidifier-on-day.m4a) is yours to add."""
if __name__ == "__main__":
    main()
