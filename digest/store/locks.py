"""One run at a time per name (e.g. one send per edition), released when the process dies.

A lock the operating system or the database releases on death, not a row a crashed run
would leave behind: `flock` on a file beside a SQLite database, a session-level advisory
lock on PostgreSQL. A second run fails at once instead of waiting. Shared holders (the
workers sending batches of one edition side by side) exclude only an exclusive holder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from digest.errors import DigestError


class LockedError(DigestError):
    """Another run holds the lock."""


@contextmanager
def run_lock(engine: Engine, name: str, *, what: str, shared: bool = False) -> Iterator[None]:
    """Hold the lock `name` for the block; LockedError naming `what` if another run has it
    (any holder when exclusive; an exclusive holder when `shared`)."""
    if engine.dialect.name == "sqlite":
        with _file_lock(_lock_path(engine, name), what, shared):
            yield
    elif engine.dialect.name == "postgresql":
        with _advisory_lock(engine, name, what, shared):
            yield
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported stores
        yield


def edition_lock(
    engine: Engine, edition_key: str, *, shared: bool = False
) -> AbstractContextManager[None]:
    """The lock a send and every change of the edition's content share; workers sending
    its batches hold it shared."""
    what = f"a send or a change of {edition_key}"
    return run_lock(engine, f"edition-{edition_key}", what=what, shared=shared)


def _locked(what: str) -> LockedError:
    return LockedError(
        f"{what} is already running", hint="wait for it to finish, then run again to resume"
    )


def _lock_path(engine: Engine, name: str) -> Path | None:
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return Path(f"{database}.{safe}.lock")


@contextmanager
def _file_lock(path: Path | None, what: str, shared: bool) -> Iterator[None]:
    if path is None:  # an in-memory database belongs to one process anyway
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _locked(what) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock; the file itself is harmless to keep


@contextmanager
def _advisory_lock(engine: Engine, name: str, what: str, shared: bool) -> Iterator[None]:
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    mode = "_shared" if shared else ""
    # a session lock needs no transaction: autocommit saves a BEGIN and a ROLLBACK round trip
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        taken = conn.execute(text(f"SELECT pg_try_advisory_lock{mode}(:k)"), {"k": key})
        if not taken.scalar():
            raise _locked(what)
        try:
            yield
        finally:
            try:
                conn.execute(text(f"SELECT pg_advisory_unlock{mode}(:k)"), {"k": key})
            except DBAPIError:
                # The session is gone (a restart, a network cut took the lock with it) or
                # unusable: closed, never pooled, so no session keeps the lock.
                conn.invalidate()
