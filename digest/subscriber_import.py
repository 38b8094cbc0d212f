"""Importing subscriber files: every row checked first, then written in short transactions.

An import is all or nothing: the store is written only when no row of any file is
invalid (or `skip_invalid` was asked for). It never lifts an unsubscribe, bounce or
complaint: only the subscriber can. It runs in two passes so that memory stays flat
whatever the size of the files:

1. Each file is read as a stream and every row checked; a bad row is reported by file and
   line at once. Rows that pass go to a compressed spool file, and a 64-bit hash of each
   address to a flat array (8 bytes a row), in which an address given twice shows up.
2. The spool is read back CHUNK rows at a time: those addresses are looked up, merged
   with what is stored, and written in one short transaction, so SQLite's single writer
   is free again within a fraction of a second. What is written is exactly what was
   checked, even if a file changes meanwhile; importing again after a failure part way
   writes only what is still different.
"""

from __future__ import annotations

import pickle
import tempfile
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol

from digest.config import Config
from digest.errors import SubscriberError
from digest.subscriber import SUPPRESSED, Subscriber, SubscriberRow, as_row
from digest.subscriber_files import FileProblem, expand, read_rows
from digest.subscribers import Consent, RowRules, row_checker

CHUNK = 2000  # rows looked up, merged and written per transaction
KINDS = ("added", "updated", "unchanged", "kept", "invalid")


class ImportOps(Protocol):
    """The store operations an import uses (store.subscribers implements them)."""

    def get_many_by_email(self, emails: Iterable[str]) -> dict[str, Subscriber]: ...
    def write_import(
        self, adds: Sequence[SubscriberRow], updates: Sequence[Subscriber], *, now: datetime
    ) -> None: ...


class ImportStore(Protocol):
    @property
    def subscribers(self) -> ImportOps: ...


class RowOutcome(NamedTuple):
    """What became of one row: `kind` is one of KINDS; `note` is the status a kept row
    kept, or why an invalid row is invalid."""

    kind: str
    file: str
    line: int
    email: str = ""
    note: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.note}" if self.kind == "invalid" else self.email


@dataclass(frozen=True)
class ImportReport:
    """How many rows went which way; `applied` is False for a dry run or a refused import."""

    files: tuple[str, ...]
    added: int
    updated: int
    unchanged: int
    kept: int  # known unsubscribed/bounced/complained: status left as it was
    invalid: int
    applied: bool


def import_subscribers(
    config: Config,
    store: ImportStore,
    paths: Iterable[str | Path],
    *,
    now: datetime,
    skip_invalid: bool = False,
    dry_run: bool = False,
    on_rows: Callable[[Sequence[RowOutcome]], None] | None = None,
) -> ImportReport:
    """Add or update the subscribers listed in YAML/CSV files (a directory: every file in it).

    Nothing is written when a row is invalid, unless `skip_invalid`; then the valid rows
    go in. `on_rows` hears of every row as it is decided: each invalid row during the
    check, the others a chunk at a time, each chunk after it was written.
    """
    given = list(paths)
    for raw in given:
        if not Path(raw).exists():
            raise SubscriberError(str(raw), "no such file or directory")
    files = expand(given)
    if not files:
        raise SubscriberError(", ".join(map(str, given)), "no *.yaml, *.yml or *.csv files")
    counts = dict.fromkeys(KINDS, 0)

    def tell(outcomes: Sequence[RowOutcome]) -> None:
        for outcome in outcomes:
            counts[outcome.kind] += 1
        if on_rows is not None:
            on_rows(outcomes)

    names = tuple(str(f) for f in files)
    with tempfile.TemporaryFile(prefix="digest-import-") as spool_file:
        spool = _Spool(spool_file)
        broken = _check(files, RowRules.of(config), now, spool, tell)
        twice = _repeated(spool, broken, names, tell)
        apply = not dry_run and (skip_invalid or counts["invalid"] == 0)
        for chunk in spool.chunks(skip_files=broken):
            rows = [r for r in chunk if (r[0], r[1]) not in twice] if twice else chunk
            _merge_chunk(rows, names, store, apply, now, tell)
    return ImportReport(
        files=names,
        added=counts["added"],
        updated=counts["updated"],
        unchanged=counts["unchanged"],
        kept=counts["kept"],
        invalid=counts["invalid"],
        applied=apply,
    )


# -- pass one: check every row ----------------------------------------------------------
SpooledRow = tuple[int, int, SubscriberRow]  # file index, line, the checked row


class _Spool:
    """Checked rows in a temporary file, CHUNK at a time (pickled as plain tuples, in
    which pickle writes each shared value once; zlib level 1: about 20 bytes a row), with
    the 64-bit hash of each address in a flat array."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._pending: list[tuple[int, int, tuple[Any, ...]]] = []
        self.hashes = array("q")

    def add(self, file_index: int, line: int, row: SubscriberRow) -> None:
        # A named tuple pickles through a Python call each way; a plain one does not.
        self._pending.append((file_index, line, tuple(row)))
        self.hashes.append(hash(row.email))
        if len(self._pending) == CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            pickle.dump(zlib.compress(pickle.dumps(self._pending, 5), 1), self._file)
            self._pending = []

    def chunks(self, *, skip_files: frozenset[int] = frozenset()) -> Iterator[list[SpooledRow]]:
        self._flush()
        self._file.seek(0)
        while True:
            try:
                blob = pickle.load(self._file)
            except EOFError:
                return
            plain: list[tuple[int, int, tuple[Any, ...]]] = pickle.loads(zlib.decompress(blob))
            if skip_files:
                plain = [r for r in plain if r[0] not in skip_files]
            if plain:
                indexes, lines, rows = zip(*plain, strict=True)
                yield list(zip(indexes, lines, map(as_row, rows), strict=True))


def _check(
    files: Sequence[Path],
    rules: RowRules,
    now: datetime,
    spool: _Spool,
    tell: Callable[[Sequence[RowOutcome]], None],
) -> frozenset[int]:
    """Check every row of every file into `spool`; the indexes of files that broke."""
    broken: set[int] = set()
    for index, path in enumerate(files):
        check_row = row_checker(rules, Consent(at=now, method="import", source=path.name))
        add = spool.add
        for item in read_rows(path):
            if isinstance(item, FileProblem):
                tell([RowOutcome("invalid", item.file, item.line, note=item.reason)])
                if item.broken:
                    broken.add(index)  # none of its rows count, as if it had none
                continue
            try:
                row = check_row(item.fields)
            except ValueError as exc:
                tell([RowOutcome("invalid", item.file, item.line, note=str(exc))])
                continue
            add(index, item.line, row)
    return frozenset(broken)


def _repeated(
    spool: _Spool,
    broken: frozenset[int],
    names: Sequence[str],
    tell: Callable[[Sequence[RowOutcome]], None],
) -> frozenset[tuple[int, int]]:
    """The rows (file index, line) whose address an earlier row already gave; each is
    reported naming both lines. Only addresses whose hash repeats are looked at again."""
    suspects = _repeated_hashes(spool.hashes)
    if not suspects:
        return frozenset()
    first: dict[str, tuple[int, int]] = {}
    again: set[tuple[int, int]] = set()
    for chunk in spool.chunks(skip_files=broken):
        for index, line, row in chunk:
            if hash(row.email) not in suspects:
                continue
            seen = first.setdefault(row.email, (index, line))
            if seen != (index, line):
                where = f"{names[seen[0]]}:{seen[1]} and {names[index]}:{line}"
                tell([RowOutcome("invalid", names[index], line, row.email,
                                 f"{row.email} appears twice: {where}")])  # fmt: skip
                again.add((index, line))
    return frozenset(again)


def _repeated_hashes(hashes: array[int]) -> set[int]:
    """Hashes that occur more than once (sorting 8 bytes a row, not a set of strings)."""
    if len(hashes) < 2:
        return set()
    import numpy as np  # only here: it takes a moment to load

    ordered = np.sort(np.frombuffer(hashes, dtype=np.int64))
    return set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())


# -- pass two: merge and write, a chunk at a time ------------------------------------------
def _merge_chunk(
    rows: list[SpooledRow],
    names: Sequence[str],
    store: ImportStore,
    apply: bool,
    now: datetime,
    tell: Callable[[Sequence[RowOutcome]], None],
) -> None:
    existing = store.subscribers.get_many_by_email([r[2].email for r in rows])
    adds: list[SubscriberRow] = []
    changes: list[Subscriber] = []
    outcomes: list[RowOutcome] = []
    for index, line, row in rows:
        old = existing.get(row.email) if existing else None
        if old is None:
            adds.append(row)
            outcomes.append(_outcome(("added", names[index], line, row.email, "")))
            continue
        merged, kind = merge(old, row)
        if merged is not old:
            changes.append(merged)
        note = old.status if kind == "kept" else ""
        outcomes.append(RowOutcome(kind, names[index], line, row.email, note))
    if apply and (adds or changes):
        store.subscribers.write_import(adds, changes, now=now)
    tell(outcomes)


_outcome = partial(tuple.__new__, RowOutcome)  # as `subscriber.as_row`: one a row, built in C


def merge(old: Subscriber, row: SubscriberRow) -> tuple[Subscriber, str]:
    """The stored subscriber updated from an import row (`old` itself when nothing changes),
    and whether it was updated, unchanged, or kept (a suppressed status the row would have
    lifted)."""
    given = row.given
    changes: dict[str, Any] = {}
    for name in ("name", "topics", "digests", "timezone", "locale"):
        if (name in given or name == "topics") and getattr(row, name) != getattr(old, name):
            changes[name] = getattr(row, name)
    kept = old.status in SUPPRESSED and row.status != old.status
    # A confirmed opt-in is not undone by a list that still says "pending".
    undoes_opt_in = old.status == "active" and row.status == "pending"
    if not kept and "status" in given and row.status != old.status and not undoes_opt_in:
        changes["status"] = row.status
    if not kept and old.consent_at is None and row.consent_at is not None:
        changes.update(
            consent_at=row.consent_at,
            consent_method=row.consent_method,
            consent_source=row.consent_source,
            consent_ip=row.consent_ip,
        )
    merged = replace(old, **changes) if changes else old
    if kept:
        return merged, "kept"
    return merged, "updated" if changes else "unchanged"
