"""Select one digest's week of articles into a frozen Edition: window, no repeats, topics,
ranking, near-duplicates merged into one card, quotas, Thoughts; then store it."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

from digest.articles import Article
from digest.config import Config, Digest
from digest.editions import Edition, EditionItem
from digest.errors import NotFoundError, UsageError
from digest.lifecycle import EDITABLE, skip_if_too_few
from digest.periods import OPTION, Period, parse_period
from digest.store import Store
from digest.thoughts import choose_thoughts


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
    store: Store,
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
    """The edition for the period `week` from its window's `articles`, skipping `carried` ids."""
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
            thoughts=prompt,
            sources=card.sources,
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
    for article in ranked:
        for i, card in enumerate(cards):
            if any(same_story(article, a) for a in (card.article, *card.merged)):
                cards[i] = replace(card, merged=(*card.merged, article))
                names = ", ".join(article.sources) or "an unnamed source"
                notes.append(f"merged {article.title!r} ({names}) into {card.article.title!r}")
                break
        else:
            cards.append(_Card(article))
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


# -- editor adjustments before approval ----------------------------------------------------


def load_edition(config: Config, store: Store, digest_key: str, period: str) -> Edition:
    """The stored edition of `digest_key` for `period` (week, date or month), or NotFoundError."""
    digest = config.digest(digest_key)
    week = parse_period(digest.cadence, period, config.digest_timezone(digest))
    edition = store.editions.get(f"{digest.key}/{week.label}")
    if edition is None:
        hint = f"digest build {digest.key} {OPTION[digest.cadence]} {week.label}"
        raise NotFoundError(f"no edition {digest.key}/{week.label}", hint=hint)
    return edition


def adjust_edition(
    config: Config,
    store: Store,
    digest_key: str,
    period: str,
    change: Callable[[Edition], Edition],
    *,
    now: datetime,
) -> Edition:
    """Apply an editor's `change` (pin, drop, move, approve) to a stored draft and store it.

    Refused once the edition is approved or has deliveries: what was approved or sent stays.
    """
    edition = load_edition(config, store, digest_key, period)
    if edition.status not in EDITABLE:
        raise UsageError(
            f"edition {edition.key} is {edition.status}; it can no longer be changed",
            hint="to start over before sending: "
            f"digest build {edition.digest} --week {edition.period} --force",
        )
    if store.editions.has_deliveries(edition.key):
        raise UsageError(f"edition {edition.key} has deliveries; it can no longer be changed")
    changed = change(edition)
    store.editions.update(changed, approved_at=now if changed.status == "approved" else None)
    return changed


def pin(edition: Edition, article_id: str) -> Edition:
    """Pin an article: first in its section, marked pinned."""
    item = _find(edition, article_id)
    pinned = replace(item, article=replace(item.article, pinned=True), reason="pinned by editor")
    return _moved(edition, pinned, 1, f"editor pinned {item.article.title!r}")


def drop(edition: Edition, article_id: str) -> Edition:
    """Take an article out of the edition."""
    item = _find(edition, article_id)
    kept = tuple(i for i in edition.items if i is not item)
    return _renumbered(edition, kept, f"editor dropped {item.article.title!r}")


def move(edition: Edition, article_id: str, position: int) -> Edition:
    """Move an article to `position` (1-based) within its own section."""
    item = _find(edition, article_id)
    size = sum(1 for i in edition.items if i.topic == item.topic)
    if not 1 <= position <= size:
        raise UsageError(
            f"position {position}: section {item.topic!r} has {_n(size, 'article')}",
            hint=f"use a position from 1 to {size}",
        )
    note = f"editor moved {item.article.title!r} to {position} in {item.topic}"
    return _moved(edition, item, position, note)


def approve(edition: Edition) -> Edition:
    """Mark the edition approved; from then on it is only read."""
    if not edition.items:
        raise UsageError(
            f"edition {edition.key} has no articles", hint="nothing to approve; rebuild it first"
        )
    return replace(edition, status="approved")


def _find(edition: Edition, article_id: str) -> EditionItem:
    for item in edition.items:
        if item.article.id == article_id:
            return item
    raise NotFoundError(
        f"edition {edition.key} has no article {article_id!r}",
        hint=f"list its articles: digest edition show {edition.digest} --week {edition.period}",
    )


def _moved(edition: Edition, item: EditionItem, position: int, note: str) -> Edition:
    section = [i for i in edition.for_topics({item.topic}) if i.article.id != item.article.id]
    section.insert(position - 1, item)
    order = edition.topics()
    items = [i for t in order for i in (section if t == item.topic else edition.for_topics({t}))]
    return _renumbered(edition, tuple(items), note)


def _renumbered(edition: Edition, items: tuple[EditionItem, ...], note: str) -> Edition:
    ranked = tuple(replace(i, rank=n) for n, i in enumerate(items, start=1))
    return replace(edition, items=ranked, notes=(*edition.notes, note))


# -- near-duplicates: the same story from two sources --------------------------------------
# Thresholds measured on the pairs in tests/test_select.py (one story in other words; two
# stories that share vocabulary): same-story pairs overlap 0.39-0.68 in title + summary,
# different ones 0.11-0.31. The different pair at 0.31 (two central banks on one day)
# shares 0.25 of its names; the hardest same pair (Seoul/Tokyo wording) shares 0.83.
TEXT_SURE = 0.50  # word overlap of title + summary that alone means one story
TEXT_LIKELY = 0.30  # ... that means one story when the summaries also name the same things
NAMES_LIKELY = 0.50
TITLE_SURE = 0.80
MIN_SHARED = 4  # fewer shared words than this is never enough ("Markets rally"/"Markets slump")

_STOP_WORDS = (
    "a an the and or but nor of to in on at for from by with without into onto over under after "
    "before about as is are was were be been being has have had do does did will would can "
    "could should may might must this that these those it its their there they them he she his "
    "her we our you your i not no than then so such very just also new says said say amid while "
    "during between up down out off more most less how why what when who which where per via vs "
    "monday tuesday wednesday thursday friday saturday sunday today yesterday january february "
    "march april june july august september october november december"
)
_STOP = frozenset(_STOP_WORDS.split())
_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve"
_NUMBERS = {w: str(i) for i, w in enumerate(_NUMBER_WORDS.split())}
_TRACKING = re.compile(r"^(utm_.*|fbclid|gclid|mc_cid|mc_eid|ref|cmpid)$")


def same_story(a: Article, b: Article) -> bool:
    """Whether two articles tell one story: one canonical URL, or closely matching words."""
    if a.url and canonical_url(a.url) == canonical_url(b.url):
        return True
    titles = _words(a.title), _words(b.title)
    if len(titles[0] & titles[1]) >= 3 and _overlap(*titles) >= TITLE_SURE:
        return True
    words = _words(f"{a.title} {a.summary}"), _words(f"{b.title} {b.summary}")
    if len(words[0] & words[1]) < MIN_SHARED:  # two short texts agree by chance
        return False
    text = _overlap(*words)
    if text >= TEXT_SURE:
        return True
    names = _names(a.summary or a.title), _names(b.summary or b.title)
    shared = len(names[0] & names[1]) / min(len(names[0]), len(names[1])) if all(names) else 0.0
    return text >= TEXT_LIKELY and shared >= NAMES_LIKELY


def canonical_url(url: str) -> str:
    """The URL without scheme, www., fragment, tracking parameters or a trailing slash."""
    parts = urlsplit(url.strip())
    host = parts.netloc.lower().removeprefix("www.")
    query = urlencode(sorted((k, v) for k, v in parse_qsl(parts.query) if not _TRACKING.match(k)))
    return f"{host}{parts.path.rstrip('/')}" + (f"?{query}" if query else "")


def _stem(word: str) -> str:
    word = _NUMBERS.get(word, word)
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _words(text: str) -> set[str]:
    stems = (_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP)
    return {w for w in stems if len(w) > 1 or w.isdigit()}


def _names(text: str) -> set[str]:
    """Capitalized words and figures: the people, places and numbers a story is about."""
    found = re.findall(r"\b(?:[A-Z][A-Za-z0-9]*|[0-9]+[A-Za-z%]*)\b", text)
    return {_stem(w.lower()) for w in found if w.lower() not in _STOP}


def _overlap(a: set[str], b: set[str]) -> float:
    """Jaccard overlap of two word sets."""
    return len(a & b) / len(a | b) if a and b else 0.0
