"""Select one digest's week of articles into a frozen Edition: window, no repeats, topics,
ranking, near-duplicates merged into one card, quotas, Thoughts; then store it.

The store operations selection uses are declared below as Protocols; `digest.store`
implements them, and this module never imports it (nor SQLAlchemy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from digest.articles import Article
from digest.config import Config, Digest
from digest.duplicates import group
from digest.editions import Edition, EditionItem
from digest.errors import UsageError
from digest.lifecycle import skip_if_too_few
from digest.periods import OPTION, Period, parse_period
from digest.thoughts import choose_thoughts


class ArticleWindow(Protocol):
    def between(self, start: datetime, end: datetime) -> list[Article]: ...


class EditionShelf(Protocol):
    def get(self, key: str) -> Edition | None: ...
    def save(self, edition: Edition, *, replace: bool = False) -> None: ...
    def carried_before(self, digest: str, period: str) -> set[str]: ...


class SelectionStore(Protocol):
    """What selection reads and writes (digest.store.Store provides it)."""

    @property
    def articles(self) -> ArticleWindow: ...
    @property
    def editions(self) -> EditionShelf: ...


@dataclass(frozen=True)
class _Card:
    """A story before placement: its best-ranked article and the near-duplicates merged in."""

    article: Article
    merged: tuple[Article, ...] = ()

    @property
    def sources(self) -> tuple[str, ...]:
        out: list[str] = []
        for a in (self.article, *self.merged):
            out.extend(s for s in a.sources if s not in out)
        return tuple(out)


def rank_key(article: Article) -> tuple[bool, int, float, str]:
    """Pinned first, then editor priority, then the most recent; the id breaks ties."""
    return (not article.pinned, -article.priority, -article.published_at.timestamp(), article.id)


def select_edition(
    config: Config,
    store: SelectionStore,
    digest_key: str,
    period: str,
    *,
    now: datetime,
    force: bool = False,
) -> Edition:
    """Select, freeze and store the edition of `digest_key` for `period` (an ISO week such as
    2026-W48, a date or a month, by the digest's cadence).

    An existing edition is rebuilt only with `force`, and never once it has deliveries;
    the new edition replaces the old one in one transaction. One with fewer than the
    digest's `min_articles` is stored as skipped, never to be sent.
    """
    digest = config.digest(digest_key)
    week = parse_period(digest.cadence, period, config.digest_timezone(digest))
    key, flag = f"{digest.key}/{week.label}", OPTION[digest.cadence]
    existing = store.editions.get(key)
    if existing is not None and not force:
        raise UsageError(
            f"edition {key} already exists"
            f" ({existing.status}, {_n(len(existing.items), 'article')})",
            hint=f"see it with `digest edition show {digest.key} {flag} {week.label}`; "
            f"select again with `digest build {digest.key} {flag} {week.label} --force`",
        )
    edition = build_edition(
        config,
        digest,
        week,
        store.articles.between(week.start, week.end),
        carried=store.editions.carried_before(digest.key, week.label),
        now=now,
    )
    edition = skip_if_too_few(edition, digest.min_articles)
    if existing is not None:  # what editors did stays on record across a rebuild
        edition = replace(edition, changes=existing.changes)
    store.editions.save(edition, replace=existing is not None)
    return edition


def build_edition(
    config: Config,
    digest: Digest,
    week: Period,
    articles: Sequence[Article],
    *,
    carried: set[str],
    now: datetime,
) -> Edition:
    """The edition for `week` from the window's `articles`, skipping ids in `carried`."""
    notes: list[str] = []
    fresh = [a for a in articles if a.id not in carried]
    if len(fresh) < len(articles):
        notes.append(
            f"skipped {_n(len(articles) - len(fresh), 'article')} an earlier edition carried"
        )
    candidates = [a for a in fresh if _digest_topics(a, digest)]
    if len(candidates) < len(fresh):
        notes.append(
            f"left out {_n(len(fresh) - len(candidates), 'article')} outside this digest's topics"
        )
    cards = _merge_duplicates(sorted(candidates, key=rank_key), notes)
    placed = _place(cards, digest, config, notes)
    ordered = [(topic, card) for topic in digest.topics for t, card in placed if t == topic]
    prompts = choose_thoughts(
        [(c.article, t) for t, c in ordered],
        {t: config.topic(t).thoughts for t in digest.topics},
        offset=week.number,
    )
    items = tuple(
        EditionItem(
            article=_with_merged_ids(card),
            topic=topic,
            rank=i,
            reason=_reason(card, topic, ordered, config, digest),
            thoughts=prompt.text,
            sources=card.sources,
            prompt_origin=prompt.origin,
        )
        for i, ((topic, card), prompt) in enumerate(zip(ordered, prompts, strict=True), start=1)
    )
    if not items:
        notes.append("no articles were published in this digest's topics in this period")
    return Edition(
        digest=digest.key,
        period=week.label,
        start=week.start,
        end=week.end,
        created_at=now,
        items=items,
        notes=tuple(notes),
    )


def _digest_topics(article: Article, digest: Digest) -> list[str]:
    """The article's topics that this digest has, in the digest's section order."""
    return [t for t in digest.topics if t in article.topics]


def _merge_duplicates(ranked: list[Article], notes: list[str]) -> list[_Card]:
    """One card per story; each keeps its best-ranked article (`ranked` is best first)."""
    cards: list[_Card] = []
    for best, *merged in group(ranked):
        for article in merged:
            names = ", ".join(article.sources) or "an unnamed source"
            notes.append(f"merged {article.title!r} ({names}) into {best.title!r}")
        cards.append(_Card(best, tuple(merged)))
    return cards


def _place(
    cards: list[_Card], digest: Digest, config: Config, notes: list[str]
) -> list[tuple[str, _Card]]:
    """Each card in the first of its topics with room, then the edition cut to max_articles."""
    placed: list[tuple[str, _Card]] = []
    counts = dict.fromkeys(digest.topics, 0)
    cut: dict[str, int] = {}
    for card in cards:  # best-ranked first, so quotas keep the best
        topics = _digest_topics(card.article, digest)
        room = next((t for t in topics if counts[t] < digest.per_topic), None)
        if room is None:
            cut[topics[0]] = cut.get(topics[0], 0) + 1
            continue
        counts[room] += 1
        placed.append((room, card))
    for topic, n in cut.items():
        notes.append(
            f"quota: cut {_n(n, 'article')} from {config.topic(topic).name}"
            f" (per_topic {digest.per_topic})"
        )
    if len(placed) > digest.max_articles:
        placed.sort(key=lambda tc: rank_key(tc[1].article))
        dropped = placed[digest.max_articles :]
        del placed[digest.max_articles :]
        titles = ", ".join(repr(c.article.title) for _, c in dropped)
        notes.append(
            f"max_articles {digest.max_articles}: cut {_n(len(dropped), 'article')} ({titles})"
        )
    return placed


def _reason(
    card: _Card, topic: str, ordered: list[tuple[str, _Card]], config: Config, digest: Digest
) -> str:
    a = card.article
    name = config.topic(topic).name
    if a.pinned:
        why = "pinned"
    elif a.priority:
        why = f"editor priority {a.priority}"
    else:
        peers = [
            c.article
            for t, c in ordered
            if t == topic and not c.article.pinned and not c.article.priority
        ]
        place = sorted(peers, key=rank_key).index(a) + 1
        why = f"{_ordinal(place)}most recent in {name}"
    first = _digest_topics(a, digest)[0]
    if first != topic:  # its own first section was full
        why += f" ({config.topic(first).name} was full)"
    if card.merged:
        by = ", ".join(dict.fromkeys(s for m in card.merged for s in m.sources)) or "elsewhere"
        why += f" + merged {_n(len(card.merged), 'duplicate')} from {by}"
    return why


def _ordinal(n: int) -> str:
    if n == 1:
        return ""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix} "


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _with_merged_ids(card: _Card) -> Article:
    """The card's article, recording merged ids so later editions never repeat the story."""
    if not card.merged:
        return card.article
    ids = [m.id for m in card.merged]
    return replace(card.article, extra={**card.article.extra, "merged_ids": ids})
