"""JSON Feed 1.1 (https://jsonfeed.org/version/1.1), parsed with json: feedparser cannot.

Our extension is an ``_digest`` object on an item:
``{"thoughts": [..], "labels": [..], "ai_generated": true, "read_minutes": 4}``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from digest.config import Config, Source
from digest.errors import SourceError
from digest.sources.fetch import read_bytes, source_location
from digest.sources.normalize import Category, RawEntry, string_list, to_article
from digest.sources.report import EntryError, ReaderResult, Skipped

VERSION_PREFIX = "https://jsonfeed.org/version/"


def read_json_feed(source: Source, config: Config) -> Iterator[ReaderResult]:
    """Articles of a JSON Feed; broken items come out as Skipped."""
    where = source_location(source)
    data = read_bytes(source, config)
    try:
        feed = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise SourceError(where, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise SourceError(
            where, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno
        ) from None
    if not isinstance(feed, dict) or not str(feed.get("version", "")).startswith(VERSION_PREFIX):
        raise SourceError(
            where, f"not a JSON Feed: 'version' must start with {VERSION_PREFIX}", key="version"
        )
    items = feed.get("items")
    if not isinstance(items, list):
        raise SourceError(where, "expected a list", key="items")
    for index, item in enumerate(items):
        label = f"items[{index}]"
        if isinstance(item, dict) and item.get("title"):
            label += f" ({' '.join(str(item['title']).split())!r})"
        try:
            if not isinstance(item, dict):
                raise EntryError("expected an object")
            yield to_article(_raw_entry(item, source), config, default_topic=source.topic)
        except EntryError as exc:
            yield Skipped(f"{where}: {label}", str(exc))


def _raw_entry(item: dict[str, Any], source: Source) -> RawEntry:
    ext = item.get("_digest") or {}
    if not isinstance(ext, dict):
        raise EntryError("_digest: expected an object")
    body = item.get("content_html") or ""
    if not body and item.get("content_text"):
        paragraphs = str(item["content_text"]).split("\n\n")
        body = "".join(f"<p>{html.escape(p.strip())}</p>" for p in paragraphs if p.strip())
    summary = item.get("summary")
    return RawEntry(
        source=source.name,
        id_key=str(item["id"]) if item.get("id") not in (None, "") else None,
        url=item.get("url") or item.get("external_url"),
        title=item.get("title"),
        published_at=_date(item, "date_published") or _date(item, "date_modified"),
        updated_at=_date(item, "date_modified"),
        categories=tuple(Category(t) for t in string_list(item.get("tags"), "tags")),
        summary_html=html.escape(str(summary)) if summary else "",
        body_html=str(body),
        labels=string_list(ext.get("labels"), "_digest.labels"),
        ai_generated=_bool(ext.get("ai_generated", False), "_digest.ai_generated"),
        read_minutes=_minutes(ext.get("read_minutes")),
        thoughts=string_list(ext.get("thoughts"), "_digest.thoughts"),
        image=item.get("image") or item.get("banner_image"),
    )


def _date(item: dict[str, Any], key: str) -> datetime | None:
    value = item.get(key)
    if value in (None, ""):
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise EntryError(f"{key}: unparseable date {value!r} (expected RFC 3339)") from None


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise EntryError(f"{key}: expected true or false, got {value!r}")
    return value


def _minutes(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EntryError(f"_digest.read_minutes: expected a whole number ≥ 1, got {value!r}")
    return value
