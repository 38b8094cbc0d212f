"""RSS and Atom feeds, read with feedparser, plus the digest extension elements.

The extension namespace is ``xmlns:digest="https://digest.example.com/ns/1.0"``:

- ``<digest:thoughts>``: Thoughts prompts, one per line;
- ``<digest:label>``: labels such as "AI Analysis", separated by commas;
- ``<digest:aiGenerated>``: ``true`` or ``false``;
- ``<digest:readMinutes>``: a whole number of minutes.

feedparser exposes them as ``digest_thoughts``, ``digest_label``, ``digest_aigenerated``
and ``digest_readminutes`` and keeps only the last of repeated elements, which is why
several prompts or labels share one element.
"""

from __future__ import annotations

import html
import time
import xml.sax
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from xml.parsers import expat

import feedparser

from digest.config import Config, Source
from digest.errors import SourceError
from digest.sources.fetch import read_bytes, source_location
from digest.sources.normalize import Category, RawEntry, to_article
from digest.sources.report import EntryError, ReaderResult, Skipped

NAMESPACE = "https://digest.example.com/ns/1.0"
TRUE_WORDS = frozenset({"true", "yes", "1"})
FALSE_WORDS = frozenset({"false", "no", "0", ""})


def read_feed(source: Source, config: Config) -> Iterator[ReaderResult]:
    """Articles of an RSS 2.0 / Atom 1.0 feed; broken entries come out as Skipped."""
    where = source_location(source)
    data = read_bytes(source, config)
    check_well_formed(data, where)
    parsed = feedparser.parse(data)
    problem = parsed.get("bozo_exception") if parsed.get("bozo") else None
    if not parsed.entries:
        if problem is not None and not isinstance(problem, xml.sax.SAXParseException):
            raise SourceError(where, f"cannot parse the feed: {problem}")
        if not parsed.get("version"):
            raise SourceError(where, "not an RSS or Atom feed")
    noun = "entry" if str(parsed.get("version", "")).startswith("atom") else "item"
    for number, entry in enumerate(parsed.entries, start=1):
        label = _entry_label(noun, number, entry)
        try:
            raw = _raw_entry(entry, source)
            yield to_article(raw, config, default_topic=source.topic)
        except EntryError as exc:
            yield Skipped(f"{where}: {label}", str(exc))


def check_well_formed(data: bytes, where: str) -> None:
    """Refuse a document that is not whole XML: a truncated download, a mismatched tag.

    feedparser would keep the entries before the fault and drop the rest without a word,
    so the feed is checked first. HTML entities such as ``&nbsp;`` (undefined in XML, but
    common in feeds) are tolerated; external entities are never loaded.
    """
    parser = expat.ParserCreate()
    parser.UseForeignDTD(True)
    parser.ExternalEntityRefHandler = lambda *_args: 1  # skip, never fetch
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        if exc.code == _UNKNOWN_ENCODING:
            return  # an encoding expat lacks (e.g. windows-1252): feedparser converts it
        reason = expat.ErrorString(exc.code)
        if exc.code == _NO_ELEMENT and exc.lineno > 1:
            reason += " (the document ends early: truncated?)"
        raise SourceError(where, f"not well-formed XML: {reason}", line=exc.lineno) from None


_UNKNOWN_ENCODING = expat.errors.codes[expat.errors.XML_ERROR_UNKNOWN_ENCODING]
_NO_ELEMENT = expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS]


def _entry_label(noun: str, number: int, entry: Any) -> str:
    title = " ".join(str(entry.get("title", "")).split())
    return f"{noun} {number} ({title!r})" if title else f"{noun} {number}"


def _raw_entry(entry: Any, source: Source) -> RawEntry:
    body = _body(entry)
    summary = _text_as_html(entry.get("summary_detail"))
    if summary and summary == body:
        summary = ""  # feedparser copies the content into `summary` when there is none
    return RawEntry(
        source=source.name,
        id_key=entry.get("id") or None,
        url=entry.get("link"),
        title=entry.get("title"),
        published_at=_date(entry, "published" if entry.get("published") else "updated"),
        updated_at=_date(entry, "updated", required=False),
        categories=tuple(
            Category(str(tag.get("label") or tag.get("term") or ""), str(tag.get("term") or ""))
            for tag in entry.get("tags", [])
        ),
        summary_html=summary,
        body_html=body,
        labels=tuple(s.strip() for s in str(entry.get("digest_label", "")).split(",") if s.strip()),
        ai_generated=_flag(entry.get("digest_aigenerated"), "digest:aiGenerated"),
        read_minutes=_minutes(entry.get("digest_readminutes")),
        thoughts=tuple(line.strip() for line in str(entry.get("digest_thoughts", "")).splitlines()),
        image=_image(entry),
    )


def _body(entry: Any) -> str:
    contents = entry.get("content") or []
    for wanted in ("text/html", "application/xhtml+xml", None):
        for content in contents:
            if wanted is None or content.get("type") == wanted:
                return _text_as_html(content)
    return ""


def _text_as_html(detail: Any) -> str:
    if not detail:
        return ""
    value = str(detail.get("value", ""))
    return html.escape(value) if detail.get("type") == "text/plain" else value


def _date(entry: Any, field: str, *, required: bool = True) -> datetime | None:
    text = entry.get(field)
    parsed: time.struct_time | None = entry.get(f"{field}_parsed")
    if not text:
        return None
    if parsed is None:
        if required:
            raise EntryError(f"unparseable date {text!r}")
        return None
    return datetime(*parsed[:6], tzinfo=UTC)


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise EntryError(f"{name}: expected true or false, got {value!r}")


def _minutes(value: Any) -> int | None:
    if value is None or not str(value).strip():
        return None
    try:
        minutes = int(str(value).strip())
    except ValueError:
        raise EntryError(f"digest:readMinutes: {value!r} is not a whole number") from None
    if minutes < 1:
        raise EntryError(f"digest:readMinutes: {minutes} is less than 1")
    return minutes


def _image(entry: Any) -> str | None:
    for media in (*entry.get("media_content", []), *entry.get("media_thumbnail", [])):
        if media.get("url"):
            return str(media["url"])
    for link in entry.get("links", []):
        if link.get("rel") == "enclosure" and str(link.get("type", "")).startswith("image/"):
            return str(link.get("href"))
    image = entry.get("image")
    return str(image["href"]) if isinstance(image, dict) and image.get("href") else None
