"""The pages tell the truth about the code: every `humwatch` command line in their shell blocks
parses against the real command tree, every relative link and picture resolves (to a heading too,
where it names one), the reference lists every command and option, every settings file they show
is read by `humwatch live`, and the README's test command is the one CI runs.

The convention for command lines: a value the reader chooses is written in capitals (BUNDLE, FILE)
or in angle brackets inside a word (models/<run_id>, read as models/RUN_ID); paths need not exist
here (they are the reader's). A line is checked where `humwatch` is the command: at the start of a
shell command (after `sudo`, `uv run`, an environment assignment, or a path to the program), not
as an argument of another program (`docker run … humwatch bundle check` is the image's name).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from conftest import REPO

from edge.cli import main as cli

PAGES = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "ha-addon" / "DOCS.md")
SHELL = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*```\s*([\w-]*)")
PLACEHOLDER = re.compile(r"<([\w-]+)>")
OPERATOR = re.compile(r"^[|&;()<>]+$")
PREFIXES = {"sudo", "exec", "time", "env"}


def blocks(page: Path) -> list[tuple[str, int, list[str]]]:
    """The page's fenced code blocks: (language, first line number, lines)."""
    found, language, start, lines = [], None, 0, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(line)
        if fence and language is None:
            language, start, lines = fence.group(1).lower(), number + 1, []
        elif fence:
            found.append((language, start, lines))
            language = None
        elif language is not None:
            lines.append(line)
    return found


def shell_lines(page: Path) -> list[tuple[int, str]]:
    """(line number, text) of the page's shell blocks, continuation lines (a trailing \\) joined."""
    joined = []
    for language, start, lines in blocks(page):
        if language not in SHELL:
            continue
        pending, first = "", 0
        for offset, line in enumerate(lines):
            first = first if pending else start + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            joined.append((first, pending + line))
            pending = ""
    return joined


def humwatch_commands(text: str) -> list[list[str]]:
    """The arguments of each `humwatch` invocation on a shell line (placeholders read as capitals)."""
    lexer = shlex.shlex(PLACEHOLDER.sub(lambda match: match.group(1).upper(), text), posix=True,
                        punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    commands, words = [], []
    for token in [*lexer, ";"]:
        if not OPERATOR.match(token):
            words.append(token)
            continue
        while words and (words[0] in PREFIXES or re.match(r"^\w+=", words[0])):
            words = words[1:]
        if words[:2] == ["uv", "run"]:
            words = words[2:]
        if words and (words[0] == "humwatch" or words[0].endswith("/bin/humwatch")):
            commands.append(words[1:])
        words = []
    return commands


def documented_commands() -> list[tuple[str, list[str]]]:
    """('page:line', arguments) of every humwatch command line the pages show."""
    return [(f"{page.relative_to(REPO)}:{number}", args)
            for page in PAGES for number, text in shell_lines(page) for args in humwatch_commands(text)]


def parse(args: list[str]) -> None:
    """Parse a command line as `humwatch` would, without running it: the subcommands resolved, the
    last one's options and arguments converted (a ClickException says what is wrong)."""
    args, command, names = list(args), cli, ["humwatch"]
    ctx = click.Context(cli, info_name="humwatch")
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.get_command(ctx, args[0])
        if sub is None:
            raise click.UsageError(f"no such command {' '.join(names)} {args[0]!r}")
        names.append(args.pop(0))
        command, ctx = sub, click.Context(sub, info_name=names[-1], parent=ctx)
    try:
        command.make_context(" ".join(names), args, resilient_parsing=False)
    except click.exceptions.Exit:  # --help, --version
        pass


@pytest.fixture
def paths_are_the_readers(monkeypatch):
    """A page's paths (BUNDLE, /var/lib/humwatch/bundle) need not exist on this machine."""
    monkeypatch.setattr(click.Path, "convert", lambda self, value, param, ctx: self.coerce_path_result(value))
    monkeypatch.setattr(click.File, "convert", lambda self, value, param, ctx: value)


def test_every_block_names_its_language():
    """Shell blocks are the ones checked, so none may hide as a block without a language."""
    unnamed = [f"{page.relative_to(REPO)}:{start - 1}" for page in PAGES for language, start, _ in blocks(page)
               if not language]
    assert not unnamed, f"blocks without a language (```bash, ```text, ...): {unnamed}"


def test_the_pages_show_command_lines():
    found = documented_commands()
    assert len(found) > 20
    shown = {args[0] for _, args in found if args}
    assert {"demo", "live", "train", "export", "bundle", "batch", "stream", "history"} <= shown


def test_every_documented_command_line_parses(paths_are_the_readers):
    failures = []
    for where, args in documented_commands():
        try:
            parse(args)
        except click.ClickException as error:
            failures.append(f"{where}: humwatch {shlex.join(args)}: {error.format_message()}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("line, problem", [
    ("humwatch live --bundle B --no-such-option 3", "No such option"),
    ("uv run humwatch trian --beats-checkpoint X", "no such command"),
    ("sudo /opt/humwatch/bin/humwatch bundle chek B", "no such command"),
    ("humwatch batch --bundle B --precision int9 x.wav", "int9"),
    ("humwatch live --level fridge=0.8", "fridge"),
    ("humwatch thresholds --run models/<run_id> extra", "unexpected extra argument"),
    ("arecord -t raw | humwatch live --source - --hop soon", "soon"),
])
def test_a_wrong_command_line_is_caught(paths_are_the_readers, line, problem):
    (args,) = humwatch_commands(line)
    with pytest.raises(click.ClickException) as caught:
        parse(args)
    assert problem in caught.value.format_message()


def test_only_humwatch_as_the_command_is_read():
    assert humwatch_commands("docker run --rm -v /x:/data humwatch bundle check /data/bundle") == []
    assert humwatch_commands("journalctl -u humwatch-live -f  # humwatch live --bogus") == []
    assert humwatch_commands("cat a.raw | humwatch live --source - > out.jsonl && humwatch history --db h") == [
        ["live", "--source", "-"], ["history", "--db", "h"]]
    assert humwatch_commands("humwatch export --run models/<run_id>") == [["export", "--run", "models/RUN_ID"]]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation out, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda match: match.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(match.group(1)) for match in re.finditer(r"^#{1,6}\s+(.*)$", text, re.M)}


def test_relative_links_and_pictures_resolve():
    failures = []
    for page in PAGES[:-1]:  # ha-addon/DOCS.md is shown inside Home Assistant: it links nowhere
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for match in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)\)", text):
            target = match.group(1)
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                failures.append(f"{page.relative_to(REPO)}: {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                failures.append(f"{page.relative_to(REPO)}: {target}: no such heading in {file.name}")
    assert not failures, "\n".join(failures)


def test_the_anchor_rule():
    assert slug("Docker / Compose and Home Assistant add-on") == "docker--compose-and-home-assistant-add-on"
    assert slug("The loop: what the Pi got wrong, back into training") == "the-loop-what-the-pi-got-wrong-back-into-training"
    assert slug("### humwatch `bundle check`".lstrip("# ")) == "humwatch-bundle-check"


def test_the_reference_names_every_command_and_option():
    reference = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    missing = []

    def walk(group: click.Group, names: list[str], ctx: click.Context) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            sub = click.Context(command, info_name=name, parent=ctx)
            if isinstance(command, click.Group):
                walk(command, [*names, name], sub)
                continue
            heading = f"### {' '.join([*names, name])}\n"
            if heading not in reference:
                missing.append(heading.strip())
                continue
            section = reference.split(heading, 1)[1].split("\n### ", 1)[0]
            missing.extend(f"{heading.strip()} {flag}" for param in command.params if isinstance(param, click.Option)
                           for flag in param.opts if f"`{flag}" not in section and f" {flag}" not in section)

    walk(cli, ["humwatch"], click.Context(cli, info_name="humwatch"))
    assert not missing, "docs/reference.md lacks:\n" + "\n".join(missing)


def test_every_settings_file_shown_is_read(tmp_path, caplog):
    from click.testing import CliRunner

    shown = [(page, start, "\n".join(lines)) for page in PAGES for language, start, lines in blocks(page)
             if language == "toml"]
    assert len(shown) >= 2
    for page, start, text in shown:
        config = tmp_path / "humwatch.toml"
        config.write_text(text, encoding="utf-8")
        caplog.clear()
        result = CliRunner().invoke(cli, ["live", "--config", str(config), "--print-config"])
        old = [record.getMessage() for record in caplog.records if "is now" in record.getMessage()]
        assert result.exit_code == 0 and not old, f"{page.relative_to(REPO)}:{start}: {result.output} {old}"


def test_the_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).splitlines()
    commands = [line.split("#")[0].strip() for line in first_block]
    assert commands[0] == "uv run humwatch demo"
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1].strip() == commands[1] == "uv run pytest -q"
