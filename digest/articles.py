"""The Article: what every source reader produces and every later stage reads."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Article:
    """One normalized, sanitized article.

    `id` is stable across re-ingests (feed guid or URL, hashed); `published_at` is aware
    UTC; `body_html` is sanitized; `summary` is plain text.
    """

    id: str
    url: str
    title: str
    published_at: datetime
    topics: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()  # the feed's own categories, as the feed names them
    labels: tuple[str, ...] = ()
    summary: str = ""
    body_html: str = ""
    read_minutes: int = 1
    sources: tuple[str, ...] = ()
    image: str | None = None
    thoughts: tuple[str, ...] = ()
    ai_generated: bool = False
    priority: int = 0  # editor priority: higher ranks first
    pinned: bool = False
    updated_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["published_at"] = self.published_at.isoformat()
        d["updated_at"] = self.updated_at.isoformat() if self.updated_at else None
        for key in ("topics", "categories", "labels", "sources", "thoughts"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Article:
        d = dict(d)
        d["published_at"] = datetime.fromisoformat(d["published_at"])
        d["updated_at"] = datetime.fromisoformat(d["updated_at"]) if d.get("updated_at") else None
        for key in ("topics", "categories", "labels", "sources", "thoughts"):
            d[key] = tuple(d.get(key) or ())
        return cls(**d)


def article_id(key: str) -> str:
    """A stable, short id from a feed guid or URL."""
    return hashlib.sha256(key.strip().encode("utf-8")).hexdigest()[:16]
