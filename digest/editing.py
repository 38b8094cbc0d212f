"""What editors do to a stored draft before approval: pin, drop, move, rewrite a card's prompt,
summary or title, write the email's intro, approve. Every rewrite is recorded (who, when,
old and new) in the edition itself; nothing changes once it is approved or has deliveries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from digest.config import Config
from digest.editions import Change, Edition, EditionItem, find_edition
from digest.errors import NotFoundError, UsageError
from digest.lifecycle import EDITABLE
from digest.periods import OPTION

EDITOR = "editor"  # the prompt origin of a prompt an editor wrote
LIMITS = {"title": 200, "summary": 1000, "prompt": 300, "intro": 1000}  # characters


class EditionBook(Protocol):
    def get(self, key: str) -> Edition | None: ...
    def update(self, edition: Edition, *, approved_at: datetime | None = None) -> None: ...
    def has_deliveries(self, key: str) -> bool: ...


class EditingStore(Protocol):
    """What editing reads and writes (digest.store.Store provides it)."""

    @property
    def editions(self) -> EditionBook: ...


def adjust_edition(
    config: Config,
    store: EditingStore,
    digest_key: str,
    period: str,
    change: Callable[[Edition], Edition],
    *,
    now: datetime,
) -> Edition:
    """Apply an editor's `change` (pin, drop, move, set, approve) to a stored draft; store it.

    Refused once the edition is approved or has deliveries: what was approved or sent stays.
    """
    edition = find_edition(config, store.editions, digest_key, period)
    if edition.status not in EDITABLE:
        flag = OPTION[config.digest(edition.digest).cadence]
        raise UsageError(
            f"edition {edition.key} is {edition.status}; it can no longer be changed",
            hint="to start over before sending: "
            f"digest build {edition.digest} {flag} {edition.period} --force",
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


def set_card(
    edition: Edition, card: int, field: str, value: str, *, who: str, at: datetime
) -> Edition:
    """Rewrite card `card`'s (its # in `digest edition show`) prompt, summary or title."""
    item = next((i for i in edition.items if i.rank == card), None)
    if item is None:
        raise NotFoundError(
            f"edition {edition.key} has no card {card}",
            hint=f"cards are numbered 1 to {len(edition.items)} in "
            f"`digest edition show {edition.digest} --week {edition.period}`",
        )
    new = _checked(field, value, required=True)
    if field == "prompt":
        old = item.thoughts
        changed = replace(item, thoughts=new, prompt_origin=EDITOR)
    elif field == "summary":
        old = item.article.summary
        changed = replace(item, article=replace(item.article, summary=new))
    elif field == "title":
        old = item.article.title
        changed = replace(item, article=replace(item.article, title=new))
    else:
        raise UsageError(f"unknown card field {field!r} (known: prompt, summary, title)")
    if new == old:
        return edition
    record = Change(at, who, field, old, new, card=card, article_id=item.article.id)
    items = tuple(changed if i is item else i for i in edition.items)
    return replace(edition, items=items, changes=(*edition.changes, record))


def set_intro(edition: Edition, value: str, *, who: str, at: datetime) -> Edition:
    """Write (or with "" remove) the editor's note at the top of the email."""
    new = _checked("intro", value, required=False)
    if new == edition.intro:
        return edition
    record = Change(at, who, "intro", edition.intro, new)
    return replace(edition, intro=new, changes=(*edition.changes, record))


def _checked(field: str, value: str, *, required: bool) -> str:
    """Plain text on one line (the intro keeps its paragraphs), within the field's limit."""
    if field == "intro":
        text = "\n\n".join(" ".join(p.split()) for p in value.split("\n\n") if p.strip())
    else:
        text = " ".join(value.split())
    if required and not text:
        raise UsageError(f"--{field}: give some text", hint=f"e.g. --{field} 'Plain words.'")
    if len(text) > LIMITS[field]:
        raise UsageError(
            f"--{field}: {len(text)} characters, more than the {LIMITS[field]} allowed"
        )
    return text


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


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
