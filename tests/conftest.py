"""Shared fixtures: a copy of the sample project in a temp dir, its store, and a CLI runner.

Every test that touches the store (through `store` or the CLI's `run`) runs on a SQLite
file and, when DIGEST_TEST_POSTGRES names a PostgreSQL database (`make test` starts a
throwaway server: tests/pgserver.py), once more on PostgreSQL, in a schema of its own.
Those PostgreSQL runs carry the `postgres` marker: `pytest -m postgres` runs only them.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from digest.cli import cli
from digest.config import Config, load_config
from digest.store import Store, open_store

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_SECRET", SECRET)


POSTGRES_URL = os.environ.get("DIGEST_TEST_POSTGRES", "")
STORE_KINDS = [
    pytest.param("sqlite", id="sqlite"),
]
if POSTGRES_URL:
    STORE_KINDS.append(pytest.param("postgres", id="postgres", marks=pytest.mark.postgres))
# Fixtures through which a test reaches the store.
STORE_FIXTURES = {"store", "run"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if STORE_FIXTURES & set(metafunc.fixturenames) and "store_url" in metafunc.fixturenames:
        metafunc.parametrize("store_url", STORE_KINDS, indirect=True)


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store of the test's project: a SQLite file, or a fresh PostgreSQL schema."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield "sqlite:///digest.db"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_URL}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def project(tmp_path: Path, store_url: str) -> Path:
    """The sample project (digest.yaml, examples, subscribers) in a temp dir, on `store_url`."""
    dest = tmp_path / "project"
    dest.mkdir()
    config = (ROOT / "digest.yaml").read_text(encoding="utf-8")
    config, found = re.subn(r"(?m)^store: .*$", lambda _: f"store: {store_url}", config)
    assert found == 1, "digest.yaml has no top-level store: line"
    (dest / "digest.yaml").write_text(config, encoding="utf-8")
    for folder in ("examples", "templates", "subscribers"):
        if (ROOT / folder).exists():
            shutil.copytree(ROOT / folder, dest / folder)
    return dest


@pytest.fixture
def config(project: Path) -> Config:
    return load_config(project / "digest.yaml")


@pytest.fixture
def store(config: Config) -> Iterator[Store]:
    """The project's store: a real SQLite file in the temp dir, or a PostgreSQL schema."""
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
