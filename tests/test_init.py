"""`digest init` starts a project whose printed commands work, and templates ship with digest."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask

from digest.cli import cli
from digest.config import load_config
from digest.errors import ExitCode
from digest.render import compile_template
from digest.shipped import TEMPLATES, shipped
from digest.store import open_store
from digest.web import create_app

NOW = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)  # a Wednesday in 2026-W49


def _digest(*args: str, expect: int = 0) -> str:
    result = CliRunner().invoke(cli, ["--now", NOW.isoformat(), *args])
    assert result.exit_code == expect, result.output
    return result.output


def _next_commands(output: str) -> list[str]:
    block = output.split("Next, run:\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines()]


def test_init_prints_commands_that_build_and_send_this_weeks_edition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = _digest("init", str(tmp_path / "news"))
    commands = _next_commands(output)
    assert commands[0] == f"cd {tmp_path / 'news'}"
    assert re.fullmatch(r"export DIGEST_SECRET=[\w-]{32}", commands[1])
    assert commands[2:] == [
        "digest ingest",
        "digest subscribers import subscribers/",
        "digest build weekly --week 2026-W49",
        "digest send weekly --week 2026-W49 --transport outbox",
        "digest serve",
    ]
    project = tmp_path / "news"
    assert (project / "templates" / "weekly.mjml").read_text() == (
        shipped(TEMPLATES, "weekly.mjml").read_text()
    )
    # every article is dated inside the week, no later than now
    for article in (project / "articles").glob("*.md"):
        stamp = re.search(r"^date: (\S+)$", article.read_text(), re.M)
        assert stamp is not None
        when = datetime.fromisoformat(stamp.group(1).replace("Z", "+00:00"))
        assert datetime(2026, 11, 30, tzinfo=UTC) <= when <= NOW

    monkeypatch.chdir(project)
    monkeypatch.setenv("DIGEST_SECRET", commands[1].split("=", 1)[1])
    for command in commands[2:-1]:
        out = _digest(*command.split()[1:])
    assert "sent 3, skipped 0, suppressed 0, failed 0" in out
    assert len(list((project / "outbox" / "weekly" / "2026-W49").glob("*.eml"))) == 3


def test_init_refuses_a_folder_that_has_a_project_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "digest.yaml").write_text("mine\n")
    output = _digest("init", str(tmp_path), expect=ExitCode.BAD_INPUT)
    assert "digest.yaml already exists; nothing was written" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digest.yaml"]
    assert (tmp_path / "digest.yaml").read_text() == "mine\n"


@pytest.fixture
def bare_project(tmp_path: Path) -> Path:
    """A project made by `digest init`, with its templates folder emptied."""
    _digest("init", str(tmp_path / "p"))
    project = tmp_path / "p"
    for path in sorted((project / "templates").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    return project


def test_email_templates_come_from_the_project_first_then_from_digest(bare_project: Path) -> None:
    templates = bare_project / "templates"
    compiled = compile_template(templates, "weekly")
    assert compiled.path == shipped(TEMPLATES, "weekly.mjml")
    (templates / "weekly.txt").write_text("Custom text for {{ site.name }}\n")
    compiled = compile_template(templates, "weekly")
    assert compiled.path == shipped(TEMPLATES, "weekly.mjml")  # still digest's
    assert compiled.text_path == templates / "weekly.txt"  # the project's own
    assert compiled.text.render(site={"name": "My Weekly"}) == "Custom text for My Weekly\n"


def _app(project: Path) -> Flask:
    config = load_config(project / "digest.yaml")
    return create_app(config, open_store(config.store_url), now=NOW, secret="s" * 16)


def test_web_pages_come_from_the_project_first_then_from_digest(bare_project: Path) -> None:
    page = _app(bare_project).test_client().get("/subscribe")
    assert page.status_code == 200 and "My Weekly" in page.get_data(as_text=True)
    (bare_project / "templates" / "web").mkdir(parents=True)
    (bare_project / "templates" / "web" / "subscribe.html").write_text(
        '{% extends "base.html" %}{% block main %}<p>Our own form</p>{% endblock %}'
    )
    page = _app(bare_project).test_client().get("/subscribe")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and "<p>Our own form</p>" in body
    assert "My Weekly" in body  # base.html, not overridden, still comes from digest
