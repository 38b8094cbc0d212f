"""Frozen editions in the store, and which articles each one carried."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, or_, select, update

from digest.editions import Edition
from digest.errors import UsageError
from digest.store.locks import edition_lock
from digest.store.schema import deliveries, edition_articles, editions


class EditionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, key: str) -> Edition | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(editions.c.data).where(editions.c.key == key)).first()
        return None if row is None else Edition.from_dict(row.data)

    def stored(self, key: str) -> tuple[dict[str, Any], str] | None:
        """The edition's stored data and its lifecycle state, in one read (a worker checks
        both before each batch; a single statement needs no transaction around it)."""
        query = select(editions.c.data, editions.c.status).where(editions.c.key == key)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            row = conn.execute(query).first()
        return None if row is None else (row.data, row.status)

    def save(self, edition: Edition, *, replace: bool = False) -> None:
        """Store `edition`; with `replace`, the earlier one of that key goes in one transaction.

        Replacing an edition that has deliveries is refused inside the same transaction, so a
        send that starts meanwhile can never find its edition changed under it.
        """
        with edition_lock(self.engine, edition.key), self.engine.begin() as conn:
            if replace:
                if _has_deliveries(conn, edition.key):
                    raise UsageError(
                        f"edition {edition.key} has deliveries; it can no longer be rebuilt",
                        hint="a sent edition stays as it was sent; build the next week instead",
                    )
                conn.execute(
                    delete(edition_articles).where(edition_articles.c.edition_key == edition.key)
                )
                conn.execute(delete(editions).where(editions.c.key == edition.key))
            conn.execute(
                editions.insert().values(
                    key=edition.key,
                    digest=edition.digest,
                    period=edition.period,
                    status=edition.status,
                    created_at=edition.created_at,
                    data=edition.to_dict(),
                )
            )
            _write_carried(conn, edition)

    def update(self, edition: Edition, *, approved_at: datetime | None = None) -> None:
        """Rewrite an edition after an editor's change (pin, drop, reorder, approve).

        A change of content takes the edition's lock and is refused, inside the same
        transaction, once the edition has deliveries: a send never sees it change.
        """
        stored = self.get(edition.key)
        if stored is None or stored.same_content(edition):
            self._write(edition, approved_at)
            return
        with edition_lock(self.engine, edition.key):
            self._write(edition, approved_at, frozen_check=True)

    def _write(
        self, edition: Edition, approved_at: datetime | None, *, frozen_check: bool = False
    ) -> None:
        with self.engine.begin() as conn:
            if frozen_check and _has_deliveries(conn, edition.key):
                raise UsageError(
                    f"edition {edition.key} has deliveries; it can no longer be changed",
                    hint="a sent edition stays as it was sent",
                )
            values: dict[str, object] = {"status": edition.status, "data": edition.to_dict()}
            if approved_at is not None:
                values["approved_at"] = approved_at
            conn.execute(editions.update().where(editions.c.key == edition.key).values(**values))
            conn.execute(
                delete(edition_articles).where(edition_articles.c.edition_key == edition.key)
            )
            _write_carried(conn, edition)

    def carried_before(self, digest: str, period: str) -> set[str]:
        """Ids of articles that editions of `digest` other than `period` already carried."""
        key = f"{digest}/{period}"
        query = select(edition_articles.c.article_id).where(
            edition_articles.c.digest == digest, edition_articles.c.edition_key != key
        )
        with self.engine.connect() as conn:
            return {r.article_id for r in conn.execute(query)}

    def has_deliveries(self, key: str) -> bool:
        """Whether any delivery row exists for edition `key` (planned, sent or failed)."""
        with self.engine.connect() as conn:
            return _has_deliveries(conn, key)

    def list(self, digest: str | None = None) -> builtins.list[tuple[str, str, datetime]]:
        query = select(editions.c.key, editions.c.status, editions.c.created_at).order_by(
            editions.c.key
        )
        if digest:
            query = query.where(editions.c.digest == digest)
        with self.engine.connect() as conn:
            return [(r.key, r.status, r.created_at) for r in conn.execute(query)]

    def published(
        self, digest: str, period: str | None = None
    ) -> builtins.list[tuple[Edition, datetime]]:
        """Editions of `digest` that went out (a delivery was sent), newest first, each with
        the time its first delivery was sent; with `period`, only that period's. Read from
        the editions alone: the ledger keeps each one's first sent time."""
        e = editions.c
        query = select(e.data, e.first_sent_at).where(
            e.digest == digest, e.first_sent_at.is_not(None)
        )
        if period is not None:
            query = query.where(e.period == period)
        with self.engine.connect() as conn:
            return [
                (Edition.from_dict(r.data), r.first_sent_at)
                for r in conn.execute(query.order_by(e.period.desc()))
            ]

    def topic_mixes(self, key: str) -> builtins.list[tuple[str, ...]]:
        """The distinct topic sets edition `key` was sent with (from its deliveries)."""
        query = (
            select(deliveries.c.content_key)
            .where(deliveries.c.edition_key == key, deliveries.c.state == "sent")
            .distinct()
        )
        with self.engine.connect() as conn:
            keys = sorted(str(r[0]) for r in conn.execute(query))
        mixes = {tuple(k.partition("|")[0].split(",")) for k in keys if k.partition("|")[0]}
        return sorted(mixes)


def _has_deliveries(conn: Connection, key: str) -> bool:
    query = select(deliveries.c.id).where(deliveries.c.edition_key == key).limit(1)
    return conn.execute(query).first() is not None


def _write_carried(conn: Connection, edition: Edition) -> None:
    ids = {i.article.id for i in edition.items}
    for item in edition.items:
        ids.update(_merged_ids(item.article.extra))
    if ids:
        conn.execute(
            edition_articles.insert(),
            [
                {"edition_key": edition.key, "article_id": a, "digest": edition.digest}
                for a in sorted(ids)
            ],
        )


def _merged_ids(extra: dict[str, object]) -> list[str]:
    """Ids of near-duplicates merged into a card (select puts them in `extra['merged_ids']`)."""
    ids = extra.get("merged_ids", [])
    return [str(i) for i in ids] if isinstance(ids, list) else []


# -- an edition's first sent time, kept by the ledger in its own transactions ------------
def note_sent(conn: Connection, row_id: int) -> None:
    """The edition of a delivery row just recorded sent keeps the earliest sent time of its
    sent rows (the rows of one provider call share theirs: the call's time, or its
    scheduled send time)."""
    d = deliveries.c
    query = select(d.edition_key, d.sent_at).where(d.id == row_id, d.state == "sent")
    row = conn.execute(query).first()
    if row is None:  # gone meanwhile (its subscriber deleted), or not recorded by this call
        return
    first = editions.c.first_sent_at
    conn.execute(
        update(editions)
        .where(editions.c.key == row.edition_key, or_(first.is_(None), first > row.sent_at))
        .values(first_sent_at=row.sent_at)
    )


def recount_first_sent(conn: Connection, edition_key: str) -> None:
    """After sent rows were withdrawn: the earliest sent time of the rows still sent, or
    none (the edition is no longer published)."""
    d = deliveries.c
    earliest = (
        select(func.min(d.sent_at)).where(d.edition_key == edition_key, d.state == "sent")
    ).scalar_subquery()
    conn.execute(
        update(editions).where(editions.c.key == edition_key).values(first_sent_at=earliest)
    )
