"""Subscriber files (YAML and CSV): read rows with their line numbers, write them back.

Reading never validates a row's values (that is `subscribers.validate_row`); it only
finds rows and the line each starts on, so every later message can say `file:line`.
A file that cannot be read at all becomes one problem at the line where it breaks.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from digest.subscriber import Subscriber

SUFFIXES = (".yaml", ".yml", ".csv")
COLUMNS = ("email", "name", "topics", "timezone", "locale", "status")
# Optional, so an export (which carries the consent record) imports back unchanged.
CONSENT_COLUMNS = ("consent_at", "consent_method", "consent_source", "consent_ip")
ALL_COLUMNS = COLUMNS + CONSENT_COLUMNS


@dataclass(frozen=True)
class RawRow:
    """One row as written in a file: unvalidated fields and the line the row starts on."""

    file: str
    line: int
    fields: dict[str, Any]


@dataclass(frozen=True)
class FileProblem:
    """Why a file (or one row of it) could not be read as a subscriber row."""

    file: str
    line: int
    reason: str


@dataclass(frozen=True)
class ParsedFile:
    path: str
    rows: tuple[RawRow, ...]
    problems: tuple[FileProblem, ...]


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


def read_file(path: Path) -> ParsedFile:
    """Rows of one subscriber file; a file that cannot be parsed yields problems instead."""
    name = str(path)
    if path.suffix not in SUFFIXES:
        return _broken(name, 1, f"not a subscriber file (use {', '.join(SUFFIXES)})")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often write a BOM
    except FileNotFoundError:
        return _broken(name, 1, "file not found")
    except UnicodeDecodeError as exc:
        return _broken(name, 1, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        return _broken(name, 1, exc.strerror or str(exc))
    if path.suffix == ".csv":
        return _read_csv(name, text)
    return _read_yaml(name, text)


def _broken(name: str, line: int, reason: str) -> ParsedFile:
    return ParsedFile(name, (), (FileProblem(name, line, reason),))


# -- YAML ----------------------------------------------------------------------
def _read_yaml(name: str, text: str) -> ParsedFile:
    # Compose first (nodes keep their start line), then construct each item on its own.
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return ParsedFile(name, (), ())
        root_line: int = root.start_mark.line + 1
        items = _yaml_items(root)
        if isinstance(items, str):
            return _broken(name, root_line, items)
        rows: list[RawRow] = []
        problems: list[FileProblem] = []
        for node in items:
            line = node.start_mark.line + 1
            value = loader.construct_object(node, deep=True)
            if isinstance(value, dict):
                rows.append(RawRow(name, line, {str(k): v for k, v in value.items()}))
            else:
                problems.append(FileProblem(name, line, "expected a mapping with email and topics"))
        return ParsedFile(name, tuple(rows), tuple(problems))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        reason = getattr(exc, "problem", None) or str(exc)
        return _broken(name, line, f"invalid YAML: {reason}")
    finally:
        loader.dispose()


def _yaml_items(root: yaml.Node) -> list[yaml.Node] | str:
    """The item nodes of a top-level list or of `subscribers:`; a reason string if neither."""
    expected = "expected a list of subscribers, or a mapping with a 'subscribers' list"
    if isinstance(root, yaml.SequenceNode):
        return list(root.value)
    if isinstance(root, yaml.MappingNode):
        keys = [k.value for k, _ in root.value]
        if keys != ["subscribers"]:
            extra = [k for k in keys if k != "subscribers"]
            return f"unknown top-level key {extra[0]!r}; {expected}" if extra else expected
        value = root.value[0][1]
        if isinstance(value, yaml.SequenceNode):
            return list(value.value)
        if isinstance(value, yaml.ScalarNode) and value.value in ("", "~", "null"):
            return []
    return expected


# -- CSV -----------------------------------------------------------------------
def _read_csv(name: str, text: str) -> ParsedFile:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return ParsedFile(name, (), ())
        columns = [c.strip().lower() for c in header]
        for column in columns:
            if column not in ALL_COLUMNS:
                return _broken(
                    name, 1, f"unknown column {column!r} (valid: {', '.join(ALL_COLUMNS)})"
                )
        for required in ("email", "topics"):
            if required not in columns:
                return _broken(name, 1, f"missing column {required!r} in the header")
        if len(set(columns)) != len(columns):
            return _broken(name, 1, "a column appears twice in the header")
        rows: list[RawRow] = []
        problems: list[FileProblem] = []
        end = reader.line_num
        for cells in reader:
            # line_num is the last line read; a quoted cell can span lines, so the row
            # starts right after the previous row ended.
            start, end = end + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(columns):
                problems.append(
                    FileProblem(name, start, f"{len(cells)} cells, the header has {len(columns)}")
                )
                continue
            rows.append(RawRow(name, start, dict(zip(columns, cells, strict=False))))
        return ParsedFile(name, tuple(rows), tuple(problems))
    except csv.Error as exc:
        return _broken(name, reader.line_num or 1, f"invalid CSV: {exc}")


# -- writing (export) ----------------------------------------------------------
def export_fields(s: Subscriber) -> dict[str, str]:
    """A subscriber as the flat fields an import reads back."""
    return {
        "email": s.email,
        "name": s.name,
        "topics": ";".join(s.topics),
        "timezone": s.timezone,
        "locale": s.locale,
        "status": s.status,
        "consent_at": s.consent_at.isoformat() if s.consent_at else "",
        "consent_method": s.consent_method,
        "consent_source": s.consent_source,
        "consent_ip": s.consent_ip,
    }


def write_csv(subscribers: Iterable[Subscriber], out: TextIO) -> int:
    """Write a header and one row per subscriber as they come; returns how many."""
    writer = csv.DictWriter(out, fieldnames=ALL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for s in subscribers:
        writer.writerow(export_fields(s))
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
        yield yaml.safe_dump([item], sort_keys=False, allow_unicode=True, width=1000)
