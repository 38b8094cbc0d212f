"""The README's references are generated from the code and kept current."""

from __future__ import annotations

import re

import click
from cogapp import Cog
from conftest import ROOT

from digest.cli import cli


def _commands(group: click.Group, path: list[str]) -> list[tuple[str, click.Command]]:
    ctx = click.Context(group)
    out: list[tuple[str, click.Command]] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        out.append((" ".join([*path, name]), command))
        if isinstance(command, click.Group):
            out.extend(_commands(command, [*path, name]))
    return out


def test_readme_references_are_current() -> None:
    cog = Cog()
    cog.options.check = True
    cog.options.verbosity = 0
    assert cog.main(["cog", "--check", str(ROOT / "README.md")]) == 0, "run: make docs"


def test_every_command_has_help_and_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = _commands(cli, ["digest"])
    assert len(commands) >= 10
    for path, command in commands:
        assert (command.help or "").strip(), f"{path} has no help"
        assert f"### `{path}`" in readme, f"{path} is missing from README.md"


def test_module_map_matches_the_tree() -> None:
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`(digest/[\w/.]*)`", readme))
    for path in named:
        assert (ROOT / path).exists(), f"README names {path}, which does not exist"
    for entry in (ROOT / "digest").iterdir():
        if entry.name.startswith(("_", ".")) and entry.name != "__main__.py":
            continue
        shown = f"digest/{entry.name}" + ("/" if entry.is_dir() else "")
        assert shown in named, f"{shown} is missing from the README's module map"


def test_tour_examples_use_subscribers_of_the_sample_data() -> None:
    readme = (ROOT / "README.md").read_text()
    sample = "".join(p.read_text() for p in (ROOT / "subscribers").iterdir())
    used = re.findall(r"--(?:subscriber|as) ([\w.+-]+@[\w.-]+)", readme)
    assert used, "the tour shows a preview"
    for address in used:
        assert address in sample, f"{address} is not in subscribers/"
