"""Subscriber files (YAML and CSV): read rows with their line numbers, write them back.

Reading never validates a row's values (that is `subscribers.validate_row`); it only
finds rows and the line each starts on, so every later message can say `file:line`.
Files are read as a stream, a row at a time, so a list of a million rows never sits in
memory. A file that cannot be read to its end (not UTF-8, broken YAML or CSV) ends with
one problem marked `broken`, at the line where it breaks: none of its rows count.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import (
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.resolver import Resolver

from digest.subscriber import Subscriber

SUFFIXES = (".yaml", ".yml", ".csv")
COLUMNS = ("email", "name", "topics", "timezone", "locale", "status")
# Optional, so an export (which carries the consent record) imports back unchanged.
CONSENT_COLUMNS = ("consent_at", "consent_method", "consent_source", "consent_ip")
ALL_COLUMNS = COLUMNS + ("digests",) + CONSENT_COLUMNS  # digests: optional, default the first
# libyaml's emitter when PyYAML has it: the pure-Python one wrote about 1,000 rows a second.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_EXPECTED = "expected a list of subscribers, or a mapping with a 'subscribers' list"


class RawRow(NamedTuple):
    """One row as written in a file: unvalidated fields and the line the row starts on."""

    file: str
    line: int
    fields: dict[str, Any]


# One a row, so built in C rather than by the named tuple's Python constructor.
_raw_row: Callable[[tuple[str, int, dict[str, Any]]], RawRow] = partial(tuple.__new__, RawRow)


class FileProblem(NamedTuple):
    """Why a row (or, when `broken`, the rest of the file) could not be read as subscribers."""

    file: str
    line: int
    reason: str
    broken: bool = False


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Files to import: each file as given; each directory's *.yaml, *.yml, *.csv, sorted."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES))
        else:
            out.append(path)
    return out


def read_rows(path: Path) -> Iterator[RawRow | FileProblem]:
    """The rows of one subscriber file as they are read, and a problem for each that is not
    a row; a broken file's last item is a `broken` problem."""
    name = str(path)
    if path.suffix not in SUFFIXES:
        yield FileProblem(name, 1, f"not a subscriber file (use {', '.join(SUFFIXES)})", True)
        return
    try:
        # newline="": csv sees line ends as written (a quoted cell may hold one);
        # -sig: spreadsheets often write a BOM.
        text = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        yield FileProblem(name, 1, "file not found", True)
        return
    except OSError as exc:
        yield FileProblem(name, 1, exc.strerror or str(exc), True)
        return
    try:
        yield from (_csv_rows if path.suffix == ".csv" else _yaml_rows)(name, text)
    except UnicodeDecodeError:
        line, byte, reason = _first_bad_byte(path)
        yield FileProblem(name, line, f"not UTF-8 text ({reason} at byte {byte})", True)
    except OSError as exc:
        yield FileProblem(name, 1, exc.strerror or str(exc), True)
    finally:
        text.close()


def _first_bad_byte(path: Path) -> tuple[int, int, str]:
    """Where a file stops being UTF-8: line, byte offset and why (read again line by line,
    as the decoder reads ahead in blocks and cannot say which line it was on)."""
    offset = 0
    with path.open("rb") as raw:
        for number, data in enumerate(raw, start=1):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, offset + exc.start, exc.reason
            offset += len(data)
    return 1, 0, "invalid data"  # a sequence cut at a line end: say it is the first line


# -- YAML ----------------------------------------------------------------------
if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _Loader(CParser, Composer, SafeConstructor, Resolver):  # type: ignore[misc]
        """libyaml's parser (eight times PyYAML's pace) under PyYAML's composer, which
        composes one node at a time where libyaml's own composes a whole document."""

        def __init__(self, stream: TextIO) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
else:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader  # type: ignore[misc,assignment]


def _yaml_rows(name: str, lines: TextIO) -> Iterator[RawRow | FileProblem]:
    # Events are read one by one and each item of the list is composed (its node keeps its
    # start line) and constructed on its own, then dropped.
    loader = _Loader(lines)
    try:
        loader.get_event()  # stream start
        if loader.check_event(StreamEndEvent):
            return
        loader.get_event()  # document start
        root_line = _next_line(loader)
        for node in _yaml_items(loader, name, root_line):
            if isinstance(node, FileProblem):
                yield node
                return
            line = node.start_mark.line + 1
            value = loader.construct_object(node, deep=True)
            loader.constructed_objects = {}  # each item stands alone: keep nothing
            if isinstance(value, dict):
                yield RawRow(name, line, {str(k): v for k, v in value.items()})
            else:
                yield FileProblem(name, line, "expected a mapping with email and topics")
        loader.get_event()  # document end
        if not loader.check_event(StreamEndEvent):
            line = _next_line(loader)
            yield FileProblem(name, line, "invalid YAML: expected a single document", True)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(exc, "problem", None) or str(exc)
        yield FileProblem(name, line, f"invalid YAML: {reason}", True)
    finally:
        loader.dispose()


def _yaml_items(loader: _Loader, name: str, root_line: int) -> Iterator[yaml.Node | FileProblem]:
    """The item nodes of a top-level list or of `subscribers:`, composed one at a time."""
    if loader.check_event(SequenceStartEvent):
        yield from _sequence_items(loader)
        return
    if not loader.check_event(MappingStartEvent):
        _node(loader)
        yield FileProblem(name, root_line, _EXPECTED, True)
        return
    loader.get_event()
    if loader.check_event(MappingEndEvent):
        yield FileProblem(name, root_line, _EXPECTED, True)
        return
    key = _node(loader)
    if not (isinstance(key, yaml.ScalarNode) and key.value == "subscribers"):
        shown = key.value if isinstance(key, yaml.ScalarNode) else "?"
        yield FileProblem(name, root_line, f"unknown top-level key {shown!r}; {_EXPECTED}", True)
        return
    if loader.check_event(SequenceStartEvent):
        yield from _sequence_items(loader)
    elif isinstance(event := loader.peek_event(), ScalarEvent) and event.value in ("", "~", "null"):
        loader.get_event()
    else:
        yield FileProblem(name, root_line, _EXPECTED, True)
        return
    if not loader.check_event(MappingEndEvent):
        extra = _node(loader)
        shown = extra.value if isinstance(extra, yaml.ScalarNode) else "?"
        yield FileProblem(name, root_line, f"unknown top-level key {shown!r}; {_EXPECTED}", True)
        return
    loader.get_event()


def _next_line(loader: _Loader) -> int:
    event = loader.peek_event()
    return event.start_mark.line + 1 if event is not None and event.start_mark else 1


def _node(loader: _Loader) -> yaml.Node:
    """The next node, composed whole (at the top level, as PyYAML composes a document)."""
    node = loader.compose_node(None, None)  # type: ignore[arg-type]  # the stubs want an int
    if node is None:
        raise yaml.YAMLError("expected a node")
    return node


def _sequence_items(loader: _Loader) -> Iterator[yaml.Node]:
    loader.get_event()  # sequence start
    while not loader.check_event(SequenceEndEvent):
        yield _node(loader)
    loader.get_event()


# -- CSV -----------------------------------------------------------------------
def _csv_rows(name: str, lines: TextIO) -> Iterator[RawRow | FileProblem]:
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = [c.strip().lower() for c in header]
        for column in columns:
            if column not in ALL_COLUMNS:
                valid = ", ".join(ALL_COLUMNS)
                yield FileProblem(name, 1, f"unknown column {column!r} (valid: {valid})", True)
                return
        for required in ("email", "topics"):
            if required not in columns:
                yield FileProblem(name, 1, f"missing column {required!r} in the header", True)
                return
        if len(set(columns)) != len(columns):
            yield FileProblem(name, 1, "a column appears twice in the header", True)
            return
        width = len(columns)
        end = reader.line_num
        for cells in reader:
            # line_num is the last line read; a quoted cell can span lines, so the row
            # starts right after the previous row ended.
            start, end = end + 1, reader.line_num
            if not (cells and cells[0].strip()) and not "".join(cells).strip():
                continue  # blank (the first cell alone settles it for almost every row)
            if len(cells) > width:
                yield FileProblem(name, start, f"{len(cells)} cells, the header has {width}")
            else:
                yield _raw_row((name, start, dict(zip(columns, cells, strict=False))))
    except csv.Error as exc:
        yield FileProblem(name, reader.line_num or 1, f"invalid CSV: {exc}", True)


# -- writing (export) ----------------------------------------------------------
def export_fields(s: Subscriber) -> dict[str, str]:
    """A subscriber as the flat fields an import reads back."""
    return {
        "email": s.email,
        "name": s.name,
        "topics": ";".join(s.topics),
        "timezone": s.timezone,
        "digests": ";".join(s.digests),
        "locale": s.locale,
        "status": s.status,
        "consent_at": s.consent_at.isoformat() if s.consent_at else "",
        "consent_method": s.consent_method,
        "consent_source": s.consent_source,
        "consent_ip": s.consent_ip,
    }


def write_csv(subscribers: Iterable[Subscriber], out: TextIO) -> int:
    """Write a header and one row per subscriber as they come; returns how many."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ALL_COLUMNS)
    count = 0
    for s in subscribers:
        fields = export_fields(s)
        writer.writerow([fields[c] for c in ALL_COLUMNS])
        count += 1
    return count


def write_yaml(subscribers: Iterable[Subscriber], out: TextIO) -> int:
    """Write a top-level YAML list, one item at a time, so a large export never sits in memory."""
    count = 0
    for chunk in _yaml_chunks(subscribers):
        out.write(chunk)
        count += 1
    if count == 0:
        out.write("[]\n")
    return count


def _yaml_chunks(subscribers: Iterable[Subscriber]) -> Iterator[str]:
    for s in subscribers:
        item: dict[str, Any] = {k: v for k, v in export_fields(s).items() if v != ""}
        item["topics"] = list(s.topics)
        yield yaml.dump([item], Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=1000)
