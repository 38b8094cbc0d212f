"""A folder of Markdown articles, each with YAML front matter, rendered with markdown-it-py.

Front matter keys: title, url, id, date, topics (or categories), summary, labels,
ai_generated, read_minutes, thoughts (a string or a list), image, priority, pinned,
source (the outlet to credit instead of the source's own name).
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from markdown_it import MarkdownIt

from digest.config import Config, Source
from digest.errors import SourceError
from digest.sources.fetch import source_location, source_path
from digest.sources.normalize import Category, RawEntry, string_list, to_article
from digest.sources.report import EntryError, ReaderResult, Skipped

FENCE = "---"
KEYS = frozenset(
    [
        "title",
        "url",
        "id",
        "date",
        "topics",
        "categories",
        "summary",
        "labels",
        "ai_generated",
        "read_minutes",
        "thoughts",
        "image",
        "priority",
        "pinned",
        "source",
    ]
)


def read_markdown_folder(source: Source, config: Config) -> Iterator[ReaderResult]:
    """Articles from every .md file under the source's folder, in path order."""
    folder = source_path(source, config)
    where = source_location(source)
    if not folder.is_dir():
        reason = "is a file, expected a folder" if folder.exists() else "folder not found"
        raise SourceError(where, reason)
    renderer = MarkdownIt("commonmark").enable("table")
    zone = ZoneInfo(config.site.timezone)
    for path in sorted(folder.rglob("*.md")):
        relative = path.relative_to(folder).as_posix()
        shown = f"{where.rstrip('/')}/{relative}"
        try:
            meta, body = _split(path)
            raw = _raw_entry(meta, renderer.render(body), relative, source, zone)
            yield to_article(raw, config, default_topic=source.topic, require_link=False)
        except EntryError as exc:
            yield Skipped(f"{shown}:{exc.line}" if exc.line else shown, exc.reason)
        except (OSError, UnicodeDecodeError) as exc:
            yield Skipped(shown, f"cannot read: {exc}")


def _split(path: Path) -> tuple[dict[str, Any], str]:
    """Front matter (a mapping) and the Markdown body; errors carry a line number."""
    lines = path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    if not lines or lines[0].strip() != FENCE:
        raise EntryError("no front matter: the file must start with a '---' line", 1)
    for end in range(1, len(lines)):
        if lines[end].strip() in (FENCE, "..."):
            break
    else:
        raise EntryError("front matter is not closed by a '---' line", 1)
    try:
        meta = yaml.safe_load("".join(lines[1:end]))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1  # +1 for the fence, +1 for 1-based
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and start is not None:
            problem += f" ({context.removeprefix('while ')} that starts on line {start.line + 2})"
        raise EntryError(f"invalid YAML front matter: {problem}", line) from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise EntryError("front matter must be a mapping of keys to values", 2)
    unknown = sorted(str(k) for k in meta if k not in KEYS)
    if unknown:
        raise EntryError(
            f"unknown front matter key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})"
        )
    return meta, "".join(lines[end + 1 :])


def _raw_entry(
    meta: dict[str, Any], body_html: str, relative: str, source: Source, zone: ZoneInfo
) -> RawEntry:
    url = _optional_str(meta, "url")
    summary = _optional_str(meta, "summary")
    return RawEntry(
        source=source.name,
        id_key=_optional_str(meta, "id") or url or relative,
        url=url,
        title=_optional_str(meta, "title"),
        published_at=_date(meta.get("date"), zone),
        categories=tuple(
            Category(c)
            for c in string_list(meta.get("topics"), "topics")
            + string_list(meta.get("categories"), "categories")
        ),
        summary_html=html.escape(summary) if summary else "",
        body_html=body_html,
        labels=string_list(meta.get("labels"), "labels"),
        ai_generated=_typed(meta, "ai_generated", bool, False),
        read_minutes=_read_minutes(meta),
        thoughts=string_list(meta.get("thoughts"), "thoughts"),
        image=_optional_str(meta, "image"),
        priority=_typed(meta, "priority", int, 0),
        pinned=_typed(meta, "pinned", bool, False),
        credit=_optional_str(meta, "source"),
    )


def _date(value: Any, zone: ZoneInfo) -> datetime | None:
    """A YAML date or time; without an offset it is read in the site's time zone."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise EntryError(f"date: unparseable date {value!r}") from None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=zone)
    if isinstance(value, date):
        return datetime.combine(value, time(0, 0), tzinfo=zone)
    raise EntryError(f"date: expected a date, got {value!r}")


def _optional_str(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise EntryError(f"{key}: expected text")
    return str(value).strip() or None


def _typed(meta: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = meta.get(key, default)
    # bool is a subclass of int: `priority: true` is a mistake, not priority 1
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EntryError(f"{key}: expected {'true or false' if kind is bool else 'a whole number'}")
    return value


def _read_minutes(meta: dict[str, Any]) -> int | None:
    value = _typed(meta, "read_minutes", int, 0)
    if "read_minutes" in meta and value < 1:
        raise EntryError("read_minutes: must be at least 1")
    return value or None
