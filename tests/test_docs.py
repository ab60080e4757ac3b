"""The documentation says what is true: every relative link (and its #anchor) resolves, every `lp-ray`
command and option shown in a code block exists (the CLI's own parser says so, as `--help` does), and
every `console` block runs: each `$ lp-ray ...` line's output is the lines under it."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import typer
from helpers import LP_RAY, cli_env

from lp_ray.cli.commands import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def prose(page: Path) -> str:
    """The page without its code blocks and inline code (where a bracket is not a link)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not ours to check offline
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            assert anchor in anchors(dest), f"{page.name}: link to {target}: no heading with that anchor"


def _commands() -> dict:
    group = typer.main.get_command(app)
    out = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # analyze <name> (typer's own click: not click.Group)
            out.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        out[name] = command
    return out


def _option_names(command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


def shown_commands(page: Path) -> list[str]:
    """Every `lp-ray <command> ...` line of the page's code blocks but its console blocks (run below,
    where a wrong option may be the point), with a `# comment` cut."""
    lines = []
    for lang, body in FENCE.findall(page.read_text()):
        for line in body.splitlines() if lang != "console" else []:
            line = line.strip()
            if re.match(r"lp-ray [a-z]+(\|[a-z]+)*( |$)", line) and "─" not in line:  # (not a diagram)
                lines.append(line.split(" #")[0].strip())
    return lines


def test_the_pages_show_commands():
    assert len([c for p in PAGES for c in shown_commands(p)]) > 40  # the check below checks something


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_and_option_shown_exists(page):
    commands = _commands()
    for line in shown_commands(page):
        words = shlex.split(line.replace("|", " | "))[1:]
        # `lp-ray imp|pool|run ...` shows several commands at once; `analyze lmc|stability` several analyses
        for name in line.split()[1].split("|"):
            key = name
            if name == "analyze" and len(line.split()) > 2 and not line.split()[2].startswith("-"):
                key = f"analyze {line.split()[2].split('|')[0]}"
            assert key in commands, f"{page.name}: `{line}`: no command {key!r}"
            options = _option_names(commands[key])
            for w in words:
                opt = w.split("=")[0]
                if opt.startswith("--") and opt != "--":
                    assert opt in options, f"{page.name}: `{line}`: {key} has no option {opt}"


def console_blocks() -> list[tuple[str, str, list[str]]]:
    """(page, command, expected output lines) of every `console` block."""
    out = []
    for page in PAGES:
        for lang, body in FENCE.findall(page.read_text()):
            if lang != "console":
                continue
            command, expected = None, []
            for line in [*body.splitlines(), "$ "]:
                if line.startswith("$ "):
                    if command:
                        out.append((page.name, command, expected))
                    command, expected = line[2:].strip(), []
                elif line.strip():
                    expected.append(line.strip())
    return out


def test_there_are_console_blocks():
    assert len(console_blocks()) >= 3


@pytest.mark.parametrize("page, command, expected", console_blocks(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_console_block_runs_as_shown(page, command, expected, tmp_path):
    """Each is a short command (an error found before anything starts, a --help); its output must be
    the lines shown under it, in order, and nothing may be written where it ran."""
    words = shlex.split(command)
    assert words[0] == "lp-ray", f"{page}: a console block runs lp-ray only: {command}"
    proc = subprocess.run(
        [LP_RAY, *words[1:]], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120
    )
    got = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert got[: len(expected)] == expected, f"{page}: `{command}` printed:\n" + "\n".join(got)
    assert not any(tmp_path.iterdir()), f"{page}: `{command}` wrote {sorted(p.name for p in tmp_path.iterdir())}"


def test_the_readme_is_a_front_page_that_opens_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: the rest belongs in docs/"
    assert lines[0] == "# lp-ray" and lines[1] == "" and lines[2] == "```"
    assert lines[3].startswith("make demo ") and lines[4].startswith("make test ")
    guide = (ROOT / "docs" / "index.md").read_text()
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert {p for p in pages if f"({p})" not in guide} == set(), "every guide page is in docs/index.md"
