"""Articles in the store: idempotent upsert, lookup by time window."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from digest.articles import Article
from digest.store.schema import articles


@dataclass(frozen=True)
class UpsertCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0


def _content_hash(article: Article) -> str:
    blob = json.dumps(article.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ArticleStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def upsert(self, items: Iterable[Article], *, now: datetime) -> UpsertCounts:
        """Insert new articles, update changed ones, leave the rest; all in one transaction."""
        added = updated = unchanged = 0
        with self.engine.begin() as conn:
            for article in items:
                digest = _content_hash(article)
                row = conn.execute(
                    select(articles.c.content_hash).where(articles.c.id == article.id)
                ).first()
                values = {
                    "url": article.url,
                    "title": article.title,
                    "published_at": article.published_at,
                    "content_hash": digest,
                    "data": article.to_dict(),
                    "updated_at": now,
                }
                if row is None:
                    conn.execute(articles.insert().values(id=article.id, ingested_at=now, **values))
                    added += 1
                elif row.content_hash != digest:
                    conn.execute(
                        articles.update().where(articles.c.id == article.id).values(**values)
                    )
                    updated += 1
                else:
                    unchanged += 1
        return UpsertCounts(added, updated, unchanged)

    def get(self, article_id: str) -> Article | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(articles.c.data).where(articles.c.id == article_id)).first()
        return None if row is None else Article.from_dict(row.data)

    def between(self, start: datetime, end: datetime) -> list[Article]:
        """Articles published in [start, end), oldest first."""
        query = (
            select(articles.c.data)
            .where(articles.c.published_at >= start, articles.c.published_at < end)
            .order_by(articles.c.published_at, articles.c.id)
        )
        with self.engine.connect() as conn:
            return [Article.from_dict(r.data) for r in conn.execute(query)]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return len(conn.execute(select(articles.c.id)).all())
