"""Turn what a reader found in one entry into an Article: ids, UTC dates, topics, safe HTML."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import nh3

from digest.articles import WORDS_PER_MINUTE, Article, article_id
from digest.config import Config
from digest.sources.report import EntryError

SUMMARY_MAX_CHARS = 300
_HTTP_URL = re.compile(r"^https?://[^/\s]+")
AI_LABEL = "AI Analysis"


@dataclass(frozen=True)
class RawEntry:
    """One entry as a reader found it, before any cleaning; HTML fields are untrusted."""

    source: str
    id_key: str | None
    url: str | None
    title: str | None
    published_at: datetime | None
    updated_at: datetime | None = None
    categories: tuple[str, ...] = ()
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
    topics = map_topics(raw.categories, config) or ((default_topic,) if default_topic else ())
    return Article(
        id=article_id(raw.id_key or url),
        url=url,
        title=title,
        published_at=to_utc(raw.published_at),
        topics=topics,
        labels=_unique(raw.labels),
        summary=summary,
        body_html=body,
        read_minutes=raw.read_minutes or estimate_read_minutes(body),
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


def map_topics(categories: tuple[str, ...], config: Config) -> tuple[str, ...]:
    """Topic keys for feed categories: a match on key, display name or alias, any case."""
    lookup: dict[str, str] = {}
    for topic in config.topics:
        for name in (topic.key, topic.name, *topic.aliases):
            lookup.setdefault(name.strip().casefold(), topic.key)
    return _unique(
        lookup[c.strip().casefold()] for c in categories if c.strip().casefold() in lookup
    )


def sanitize_html(fragment: str) -> str:
    """Article HTML safe to put in an email: no scripts, styles or event handlers."""
    if not fragment.strip():
        return ""
    return nh3.clean(fragment, link_rel="noopener").strip()


class _TextCollector(HTMLParser):
    BLOCKS = frozenset(
        [
            "p",
            "br",
            "div",
            "li",
            "ul",
            "ol",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "blockquote",
            "tr",
            "td",
            "th",
            "pre",
            "hr",
            "figure",
            "figcaption",
        ]
    )
    HIDDEN = frozenset({"script", "style", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self.BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def plain_text(fragment: str) -> str:
    """Text of an HTML fragment with whitespace collapsed (block ends become spaces)."""
    if "<" not in fragment and "&" not in fragment:
        return " ".join(fragment.split())
    collector = _TextCollector()
    collector.feed(fragment)
    collector.close()
    return " ".join(html.unescape("".join(collector.parts)).split())


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)]*\s+")


def lead(text: str, limit: int = SUMMARY_MAX_CHARS) -> str:
    """The opening of `text` in whole sentences, at most `limit` characters, never mid-word."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    kept = ""
    for match in _SENTENCE_END.finditer(text):
        candidate = text[: match.end()].rstrip()
        if len(candidate) > limit:
            break
        kept = candidate
    if kept:
        return kept
    # One sentence longer than the limit: cut at the last space and mark the cut.
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:—- ")
    return cut + "…"


def estimate_read_minutes(body_html: str) -> int:
    words = len(plain_text(body_html).split())
    return max(1, math.ceil(words / WORDS_PER_MINUTE))


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
