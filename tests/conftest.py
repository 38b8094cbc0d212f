"""Shared fixtures: a copy of the sample project in a temp dir, its store, and a CLI runner."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from digest.cli import cli
from digest.config import Config, load_config
from digest.store import Store, open_store

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_SECRET", SECRET)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The sample project (digest.yaml, examples, templates, subscribers) in a temp dir."""
    dest = tmp_path / "project"
    dest.mkdir()
    shutil.copy(ROOT / "digest.yaml", dest / "digest.yaml")
    for folder in ("examples", "templates", "subscribers"):
        if (ROOT / folder).exists():
            shutil.copytree(ROOT / folder, dest / folder)
    return dest


@pytest.fixture
def config(project: Path) -> Config:
    return load_config(project / "digest.yaml")


@pytest.fixture
def store(config: Config) -> Iterator[Store]:
    """The project's SQLite store, a real file in the temp dir."""
    s = open_store(config.store_url)
    yield s
    s.close()


Run = Callable[..., Result]


@pytest.fixture
def run(project: Path) -> Run:
    """Invoke `digest` in-process against the temp project; fails on an unexpected exit code."""

    def _run(*args: str, expect: int = 0, input: str | None = None) -> Result:
        runner = CliRunner()
        result = runner.invoke(
            cli,
            ["--config", str(project / "digest.yaml"), *args],
            input=input,
            catch_exceptions=True,
        )
        if result.exit_code != expect:
            detail = result.output
            if result.exception and not isinstance(result.exception, SystemExit):
                import traceback

                detail += "".join(traceback.format_exception(result.exception))
            raise AssertionError(
                f"digest {' '.join(args)} exited {result.exit_code}, expected {expect}:\n{detail}"
            )
        return result

    return _run
