"""Ingest: read every configured source into the store, one source at a time.

Each source is atomic: its articles are gathered first and stored in one transaction, so
a source that cannot be read stores nothing while the others still ingest. Readers are
plain functions listed by type in READERS; an entry a reader cannot use comes out as a
`Skipped` (with where and why) instead of an Article.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from digest.articles import Article
from digest.config import Config, Source
from digest.errors import ConfigError, SourceError
from digest.sources.jsonfeed import read_json_feed
from digest.sources.markdown import read_markdown_folder
from digest.sources.normalize import unmapped
from digest.sources.report import IngestReport, ReaderResult, Skipped, SourceReport
from digest.sources.rss import read_feed

__all__ = [
    "READERS",
    "IngestReport",
    "Reader",
    "Skipped",
    "SourceReport",
    "ingest",
    "read_source",
    "reader_for",
    "survey",
]

Reader = Callable[[Source, Config], Iterator[ReaderResult]]

READERS: dict[str, Reader] = {
    "rss": read_feed,
    "atom": read_feed,
    "jsonfeed": read_json_feed,
    "markdown": read_markdown_folder,
}


class Counts(Protocol):
    @property
    def added(self) -> int: ...
    @property
    def updated(self) -> int: ...
    @property
    def unchanged(self) -> int: ...


class ArticleSink(Protocol):
    def upsert(self, items: Iterable[Article], *, now: datetime) -> Counts: ...


class HasArticles(Protocol):
    @property
    def articles(self) -> ArticleSink: ...


def reader_for(source: Source, config_path: str = "digest.yaml") -> Reader:
    """The reader for a source's type; ConfigError lists the valid types."""
    try:
        return READERS[source.type]
    except KeyError:
        valid = ", ".join(sorted(READERS))
        raise ConfigError(
            config_path,
            f"unknown source type {source.type!r} (valid: {valid})",
            key=f"sources[{source.name}].type",
        ) from None


def ingest(
    config: Config,
    store: HasArticles,
    *,
    now: datetime | Callable[[], datetime],
    names: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> IngestReport:
    """Read the sources (all, or those named) and upsert their articles, source by source."""
    sources = _chosen(config, names)
    readers = [
        reader_for(s, str(config.path)) for s in sources
    ]  # fail on a bad type before storing anything
    claimed: dict[str, str] = {}  # article id -> source that brought it in this run
    reports = []
    for source, reader in zip(sources, readers, strict=True):
        if progress is not None:
            progress(f"reading {source.name}")
        reports.append(_ingest_one(source, reader, config, store, now, claimed))
    return IngestReport(tuple(reports))


def _ingest_one(
    source: Source,
    reader: Reader,
    config: Config,
    store: HasArticles,
    now: datetime | Callable[[], datetime],
    claimed: dict[str, str],
) -> SourceReport:
    found = read_source(source, reader, config, claimed)
    if not found.ok:
        return found
    counts = store.articles.upsert(found.articles, now=now() if callable(now) else now)
    claimed.update(dict.fromkeys((a.id for a in found.articles), source.name))
    return replace(found, added=counts.added, updated=counts.updated, unchanged=counts.unchanged)


def read_source(
    source: Source, reader: Reader, config: Config, claimed: dict[str, str] | None = None
) -> SourceReport:
    """Read one source whole, storing nothing: its articles, skipped entries and categories.

    A source that cannot be read whole (missing, truncated, not well-formed) comes back with
    `error` set and no articles, so nothing of it is ever stored.
    """
    claimed = claimed or {}
    articles: dict[str, Article] = {}
    skipped: list[Skipped] = []
    try:
        for result in reader(source, config):
            if isinstance(result, Skipped):
                skipped.append(result)
            elif result.id in articles:
                skipped.append(
                    Skipped(_entry(result), "same id as an earlier entry of this source")
                )
            elif claimed.get(result.id, source.name) != source.name:
                other = claimed[result.id]
                skipped.append(Skipped(_entry(result), f"same id as an article from {other}"))
            else:
                articles[result.id] = result
    except SourceError as exc:
        return SourceReport(source.name, skipped=tuple(skipped), error=str(exc))
    counts = Counter(c for a in articles.values() for c in unmapped(a.categories, config))
    return SourceReport(
        source.name,
        skipped=tuple(skipped),
        articles=tuple(articles.values()),
        unmapped=tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def survey(config: Config, names: Iterable[str] | None = None) -> IngestReport:
    """Read the sources (all, or those named) as `ingest` would, storing nothing."""
    sources = _chosen(config, names)
    readers = [reader_for(s, str(config.path)) for s in sources]
    claimed: dict[str, str] = {}
    reports = []
    for source, reader in zip(sources, readers, strict=True):
        report = read_source(source, reader, config, claimed)
        claimed.update(dict.fromkeys((a.id for a in report.articles), source.name))
        reports.append(report)
    return IngestReport(tuple(reports))


def _entry(article: Article) -> str:
    return f"{article.url or article.id} ({article.title!r})"


def _chosen(config: Config, names: Iterable[str] | None) -> list[Source]:
    if names is None:
        return list(config.sources)
    by_name = {s.name.casefold(): s for s in config.sources}
    chosen: list[Source] = []
    for name in names:
        source = by_name.get(name.casefold())
        if source is None:
            known = ", ".join(s.name for s in config.sources) or "none"
            raise ConfigError(
                str(config.path), f"no source named {name!r} (known: {known})", key="sources"
            )
        if source not in chosen:
            chosen.append(source)
    return chosen
