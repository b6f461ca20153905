"""The command line reads like a workflow: `humwatch --help` lists the commands in the order the work
goes, each with a whole sentence; every option says what it does; an option that would have no effect
is refused with the fix; every command names its bundle with --bundle."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner
from toy_bundle import toy_bundle

from edge.cli import DESCRIPTION_WIDTH, EDGE_MODULES, SECTIONS, WORKSTATION_MODULES, _commands
from edge.cli import main as cli


def command_tree() -> list[tuple[str, click.Command]]:
    """('humwatch bundle check', command) of every command and group under `humwatch`."""
    found = []

    def walk(group: click.Group, names: list[str], ctx: click.Context) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            found.append((" ".join([*names, name]), command))
            if isinstance(command, click.Group):
                walk(command, [*names, name], click.Context(command, info_name=name, parent=ctx))

    walk(cli, ["humwatch"], click.Context(cli, info_name="humwatch"))
    return found


def test_every_command_is_listed_once_in_a_section():
    listed = [name for _, names in SECTIONS for name in names]
    registered = {*_commands(EDGE_MODULES), *_commands(WORKSTATION_MODULES)}
    assert sorted(listed) == sorted(registered)


def test_the_list_follows_the_work():
    usage = CliRunner().invoke(cli, ["--help"]).output
    titles = [usage.index(f"\n{title}:\n") for title, _ in SECTIONS]
    assert titles == sorted(titles)
    train = usage.split("Train on a workstation, in this order:\n")[1].split("\n\n")[0]
    assert [line.split()[0] for line in train.splitlines()] == ["prepare", "train", "thresholds", "evaluate", "report",
                                                                 "distill", "export", "bundle"]
    assert "Workstation commands (the train extra): demo, synth, prepare," in usage


def test_every_description_is_a_whole_sentence():
    cut = []
    for name, command in command_tree():
        short = command.get_short_help_str(DESCRIPTION_WIDTH)
        if short.endswith("...") or not short.endswith(".") or not " ".join((command.help or "").split()).startswith(short):
            cut.append(f"{name}: {short!r}")
    assert not cut, (f"descriptions cut mid-phrase (make the docstring's first sentence fit {DESCRIPTION_WIDTH} "
                     "characters):\n" + "\n".join(cut))


def test_every_option_says_what_it_does():
    silent = [f"{name} {param.opts[0]}" for name, command in command_tree() for param in command.params
              if isinstance(param, click.Option) and not re.sub(r"\[[^]]*]", "", param.help or "").strip()]
    assert not silent, "options without help:\n" + "\n".join(silent)


@pytest.mark.parametrize("given", [["--ac-on", "0.8"], ["--fridge-off=0.4"], ["--debounce-sec", "3"],
                                   ["--median-sec", "9"], ["--level", "ac.on=0.8"]])
def test_batch_refuses_what_only_changes_hops(tmp_path, given):
    result = CliRunner().invoke(cli, ["batch", "--bundle", str(tmp_path), *given, str(tmp_path)])
    assert result.exit_code == 2
    flag = given[0].split("=")[0]
    assert f"Error: {flag}" in result.output and "batch decides each file whole" in result.output
    assert "--level NAME.threshold=P" in result.output and "humwatch stream" in result.output


def test_batch_offers_only_the_thresholds():
    usage = CliRunner().invoke(cli, ["batch", "--help"]).output
    assert "--t-ac" in usage and "--t-fridge" in usage
    assert not any(flag in usage for flag in ("--ac-on", "--fridge-off", "--debounce-sec", "--median-sec"))


def test_bundle_check_takes_bundle_like_every_command(tmp_path):
    bundle = toy_bundle(tmp_path / "toy")
    result = CliRunner().invoke(cli, ["bundle", "check", "--bundle", str(bundle)])
    assert result.exit_code == 0 and f"{bundle}: bundle ok" in result.output and "old spelling" not in result.output

    old = CliRunner().invoke(cli, ["bundle", "check", str(bundle)])
    assert old.exit_code == 0 and f"{bundle}: bundle ok" in old.stdout
    assert f"is now humwatch bundle check --bundle {bundle}" in old.stderr

    both = CliRunner().invoke(cli, ["bundle", "check", "--bundle", str(bundle), str(bundle)])
    assert both.exit_code == 2 and "two bundles" in both.output
    neither = CliRunner().invoke(cli, ["bundle", "check"])
    assert neither.exit_code == 2 and "humwatch bundle check --bundle DIR" in neither.output
    assert "bundle check [OPTIONS]\n" in CliRunner().invoke(cli, ["bundle", "check", "--help"]).output
