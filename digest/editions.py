"""The Edition: one digest for one period, selected once and then frozen."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from digest.articles import Article
from digest.config import Config
from digest.errors import NotFoundError
from digest.periods import OPTION, parse_period


@dataclass(frozen=True)
class EditionItem:
    """One article card in an edition, in its topic section, with why it was chosen."""

    article: Article
    topic: str  # the section this card sits in
    rank: int  # 1-based within the whole edition; lower is better
    reason: str  # e.g. "pinned", "priority 2", "most recent"
    thoughts: str  # the one Thoughts prompt this card shows
    sources: tuple[str, ...]  # every source that carried the story (near-duplicates merged)
    prompt_origin: str = ""  # own | derived | fallback | editor ("" in older editions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "article": self.article.to_dict(),
            "topic": self.topic,
            "rank": self.rank,
            "reason": self.reason,
            "thoughts": self.thoughts,
            "sources": list(self.sources),
            "prompt_origin": self.prompt_origin,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EditionItem:
        return cls(
            article=Article.from_dict(d["article"]),
            topic=d["topic"],
            rank=d["rank"],
            reason=d["reason"],
            thoughts=d["thoughts"],
            sources=tuple(d["sources"]),
            prompt_origin=d.get("prompt_origin", ""),
        )


@dataclass(frozen=True)
class Change:
    """One editor's change to an edition: who, when, what (card and field), old and new."""

    at: datetime
    who: str
    field: str  # prompt | summary | title | intro
    old: str
    new: str
    card: int | None = None  # the card's rank when the change was made; None for the intro
    article_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Change:
        return cls(**{**d, "at": datetime.fromisoformat(d["at"])})


@dataclass(frozen=True)
class Edition:
    """A frozen selection: every later step (preview, send, resume) reads this, never re-selects.

    `key` is `DIGEST/PERIOD`, e.g. `weekly/2026-W05`. `start`/`end` are aware datetimes in
    the digest's time zone; `end` is exclusive.
    """

    digest: str
    period: str
    start: datetime
    end: datetime
    created_at: datetime
    items: tuple[EditionItem, ...]
    status: str = "draft"  # draft -> approved
    notes: tuple[str, ...] = ()  # what selection did (duplicates merged, quota cuts)
    intro: str = ""  # an editor's note at the top of the email
    changes: tuple[Change, ...] = ()  # editors' changes, oldest first

    @property
    def key(self) -> str:
        return f"{self.digest}/{self.period}"

    def topics(self) -> list[str]:
        """Topics in section order, as they appear in the edition."""
        seen: list[str] = []
        for item in self.items:
            if item.topic not in seen:
                seen.append(item.topic)
        return seen

    def for_topics(self, topics: frozenset[str] | set[str]) -> tuple[EditionItem, ...]:
        return tuple(i for i in self.items if i.topic in topics)

    @property
    def ai_generated(self) -> bool:
        return any(i.article.ai_generated for i in self.items)

    def same_content(self, other: Edition) -> bool:
        """Whether `other` carries exactly what this edition carries (its status aside)."""
        mine, theirs = self.to_dict(), other.to_dict()
        mine.pop("status")
        theirs.pop("status")
        return mine == theirs

    def with_items(self, items: tuple[EditionItem, ...]) -> Edition:
        return replace(self, items=items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "digest": self.digest,
            "period": self.period,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "created_at": self.created_at.isoformat(),
            "status": self.status,
            "notes": list(self.notes),
            "intro": self.intro,
            "changes": [c.to_dict() for c in self.changes],
            "items": [i.to_dict() for i in self.items],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Edition:
        return cls(
            digest=d["digest"],
            period=d["period"],
            start=datetime.fromisoformat(d["start"]),
            end=datetime.fromisoformat(d["end"]),
            created_at=datetime.fromisoformat(d["created_at"]),
            status=d.get("status", "draft"),
            notes=tuple(d.get("notes", ())),
            intro=d.get("intro", ""),
            changes=tuple(Change.from_dict(c) for c in d.get("changes", ())),
            items=tuple(EditionItem.from_dict(i) for i in d["items"]),
        )


# -- finding a stored edition -----------------------------------------------------------
class EditionReader(Protocol):
    """The store operation a lookup needs (implemented by store.editions.EditionStore)."""

    def get(self, key: str) -> Edition | None: ...


def edition_key(config: Config, digest_key: str, period: str) -> str:
    """`DIGEST/PERIOD` for a known digest and a period as typed (`2026-w48` → `2026-W48`;
    a date names the week or month holding it); a ConfigError for an unknown digest, a
    UsageError for a period that is not one of the digest's cadence."""
    digest = config.digest(digest_key)
    tz = config.digest_timezone(digest)
    return f"{digest.key}/{parse_period(digest.cadence, period, tz).label}"


def find_edition(config: Config, editions: EditionReader, digest_key: str, period: str) -> Edition:
    """The stored edition of `digest_key` for `period` (week, date or month); NotFoundError
    naming the command that builds it. Every command that reads an edition goes through here."""
    key = edition_key(config, digest_key, period)
    edition = editions.get(key)
    if edition is None:
        digest, label = key.split("/")
        option = OPTION[config.digest(digest).cadence]
        raise NotFoundError(f"no edition {key}", hint=f"digest build {digest} {option} {label}")
    return edition
