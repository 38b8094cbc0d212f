"""Turn what a reader found in one entry into an Article: ids, UTC dates, topics, safe HTML."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nh3

from digest.articles import Article, article_id
from digest.config import Config
from digest.sources.report import EntryError
from digest.text import lead, plain_text, read_minutes

_HTTP_URL = re.compile(r"^https?://[^/\s]+")
AI_LABEL = "AI Analysis"


@dataclass(frozen=True)
class Category:
    """A feed category: the label people read and, in Atom, the term machines read."""

    label: str
    term: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in (self.label, self.term) if n and n.strip())


@dataclass(frozen=True)
class RawEntry:
    """One entry as a reader found it, before any cleaning; HTML fields are untrusted."""

    source: str
    id_key: str | None
    url: str | None
    title: str | None
    published_at: datetime | None
    updated_at: datetime | None = None
    categories: tuple[Category, ...] = ()
    summary_html: str = ""
    body_html: str = ""
    labels: tuple[str, ...] = ()
    ai_generated: bool = False
    read_minutes: int | None = None
    thoughts: tuple[str, ...] = ()
    image: str | None = None
    priority: int = 0
    pinned: bool = False
    credit: str | None = None  # the original outlet, when it differs from the source


def to_article(
    raw: RawEntry, config: Config, *, default_topic: str | None, require_link: bool = True
) -> Article:
    """Validate and normalize one entry; EntryError says what makes it unusable."""
    title = plain_text(raw.title or "")
    if not title:
        raise EntryError("no title")
    url = (raw.url or "").strip()
    if not url and (require_link or not raw.id_key):
        raise EntryError("no link")
    if url and not _HTTP_URL.match(url):
        raise EntryError(f"link {url!r} is not an http(s) URL")
    if raw.published_at is None:
        raise EntryError("no date")
    body = sanitize_html(raw.body_html or raw.summary_html)
    summary = plain_text(raw.summary_html)
    summary = lead(summary) if summary else lead(plain_text(body))
    lookup = topic_lookup(config)
    shown = tuple(_shown(c, lookup) for c in raw.categories if c.names)
    topics = map_topics(shown, config) or ((default_topic,) if default_topic else ())
    return Article(
        id=article_id(raw.id_key or url),
        url=url,
        title=title,
        published_at=to_utc(raw.published_at),
        topics=topics,
        categories=_unique(shown),
        labels=_unique(raw.labels),
        summary=summary,
        body_html=body,
        read_minutes=raw.read_minutes or read_minutes(body),
        sources=(raw.credit or raw.source,),
        image=raw.image if raw.image and _HTTP_URL.match(raw.image) else None,
        thoughts=_unique(t.strip() for t in raw.thoughts),
        ai_generated=raw.ai_generated,
        priority=raw.priority,
        pinned=raw.pinned,
        updated_at=to_utc(raw.updated_at) if raw.updated_at else None,
    )


def to_utc(when: datetime) -> datetime:
    """Aware UTC; a naive time is taken to be UTC already (what feed specs assume)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def topic_lookup(config: Config) -> dict[str, str]:
    """Topic key by casefolded key, display name or alias."""
    lookup: dict[str, str] = {}
    for topic in config.topics:
        for name in (topic.key, topic.name, *topic.aliases):
            lookup.setdefault(name.strip().casefold(), topic.key)
    return lookup


def map_topics(categories: Iterable[str], config: Config) -> tuple[str, ...]:
    """Topic keys for feed categories: a match on key, display name or alias, any case."""
    lookup = topic_lookup(config)
    found = (lookup.get(c.strip().casefold(), "") for c in categories)
    return _unique(found)


def unmapped(categories: Iterable[str], config: Config) -> list[str]:
    """The categories that map to no topic."""
    lookup = topic_lookup(config)
    return [c for c in categories if c.strip().casefold() not in lookup]


def _shown(category: Category, lookup: dict[str, str]) -> str:
    """The name that maps to a topic, else the label (else the term): what reports show."""
    return next((n for n in category.names if n.casefold() in lookup), category.names[0])


def sanitize_html(fragment: str) -> str:
    """Article HTML safe to put in an email: no scripts, styles or event handlers."""
    if not fragment.strip():
        return ""
    return nh3.clean(fragment, link_rel="noopener").strip()


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in items:
        if item and item not in seen:
            seen[item] = None
    return tuple(seen)


def string_list(value: Any, key: str) -> tuple[str, ...]:
    """A string or a list of strings from a feed or front matter, as a tuple."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise EntryError(f"{key}: expected a string or a list of strings")
