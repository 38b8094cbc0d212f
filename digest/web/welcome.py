"""The latest published edition for a new reader's topics, as the welcome email lists it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from digest.config import Config
from digest.editions import Edition
from digest.render.view import Section, context, edition_url, in_sections, subject_for


class PublishedEditions(Protocol):
    def published(
        self, digest: str, period: str | None = None
    ) -> list[tuple[Edition, datetime]]: ...
    def topic_mixes(self, key: str) -> list[tuple[str, ...]]: ...


class HasPublished(Protocol):
    @property
    def editions(self) -> PublishedEditions: ...


@dataclass(frozen=True)
class Latest:
    edition: Edition
    digest_name: str
    subject: str
    sections: tuple[Section, ...]
    web_url: str  # empty when the digest's archive is off


def latest_for(config: Config, store: HasPublished, topics: Sequence[str]) -> Latest | None:
    """The newest sent edition (of any digest) that has a section for one of `topics`."""
    best: tuple[Edition, str] | None = None
    for digest in config.digests:
        for edition, _sent in store.editions.published(digest.key):
            if set(edition.topics()) & set(topics):
                if best is None or edition.end > best[0].end:
                    best = (edition, digest.name)
                break
    if best is None:
        return None
    edition, name = best
    items = in_sections(edition, topics)
    subject = subject_for(config, edition)
    shown = context(config, edition, items, subject, web=True)
    return Latest(
        edition=edition,
        digest_name=name,
        subject=subject,
        sections=tuple(shown["sections"]),
        web_url=edition_url(config, edition, [s.key for s in shown["sections"]]),
    )
