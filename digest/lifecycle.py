"""The life of an edition: draft → test-sent → approved → scheduled → sending → sent,
or cancelled; skipped when its period had too few articles.

Only an approved edition is sent, unless its digest sets `schedule.require_approval:
false`; `send.send_edition` checks this itself, so no caller can send a draft by mistake.
Each change of state is logged with the reason (`digest editions` shows the latest).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Protocol

from digest.config import Digest
from digest.editions import Edition
from digest.errors import UsageError
from digest.periods import OPTION

DRAFT = "draft"
TEST_SENT = "test-sent"
APPROVED = "approved"
SCHEDULED = "scheduled"
SENDING = "sending"
SENT = "sent"
CANCELLED = "cancelled"
SKIPPED = "skipped"
STATES = (DRAFT, TEST_SENT, APPROVED, SCHEDULED, SENDING, SENT, CANCELLED, SKIPPED)

EDITABLE = frozenset({DRAFT, TEST_SENT})  # an editor may still pin, drop, move, approve
SENDABLE = frozenset({APPROVED, SCHEDULED, SENDING, SENT})  # approved, maybe sent already
# Which states each state may move to; anything else is refused.
MOVES: dict[str, frozenset[str]] = {
    DRAFT: frozenset({TEST_SENT, APPROVED, SENDING, CANCELLED}),
    TEST_SENT: frozenset({TEST_SENT, APPROVED, SENDING, CANCELLED}),
    APPROVED: frozenset({SCHEDULED, SENDING, CANCELLED}),
    SCHEDULED: frozenset({SENDING, CANCELLED}),
    SENDING: frozenset({SENT, CANCELLED}),
    SENT: frozenset({SENDING, CANCELLED}),  # --retry-failed, --include-new; withdraw batches
    CANCELLED: frozenset({APPROVED}),  # approved again: the send resumes where it stopped
    SKIPPED: frozenset(),
}


class StateStore(Protocol):
    """What moving an edition between states needs (digest.store.schedules.ScheduleStore)."""

    def state(self, edition_key: str) -> str | None: ...
    def move(
        self, edition_key: str, to: str, *, allowed_from: frozenset[str], note: str, now: datetime
    ) -> bool: ...


def flag(edition: Edition, digest: Digest) -> str:
    """`--week 2026-W48` (or --date, --month): how commands name this edition."""
    return f"{OPTION[digest.cadence]} {edition.period}"


def skip_if_too_few(edition: Edition, min_articles: int) -> Edition:
    """The edition marked skipped (with a note) when it has fewer than `min_articles`."""
    if len(edition.items) >= min_articles:
        return edition
    note = (
        f"skipped: {len(edition.items)} articles, fewer than min_articles {min_articles}; "
        "nothing is sent for this period"
    )
    return replace(edition, status=SKIPPED, notes=(*edition.notes, note))


def check_sendable(edition: Edition, digest: Digest) -> None:
    """UsageError unless `edition` may be delivered now (approved, or approval not required)."""
    command = f"{digest.key} {flag(edition, digest)}"
    if edition.status == SKIPPED:
        raise UsageError(
            f"edition {edition.key} was skipped: too few articles (min_articles "
            f"{digest.min_articles}); nothing is sent for this period",
            hint=f"add articles, then: digest build {command} --force",
        )
    if edition.status == CANCELLED:
        raise UsageError(
            f"edition {edition.key} is cancelled",
            hint=f"to send it after all: digest edition approve {command}",
        )
    if edition.status not in SENDABLE and digest.schedule.require_approval:
        raise UsageError(
            f"edition {edition.key} is {edition.status}, not approved; "
            "this digest sends approved editions only",
            hint=f"review it, then: digest edition approve {command}",
        )


def move(store: StateStore, edition: Edition, to: str, *, note: str, now: datetime) -> bool:
    """Move `edition` to state `to` if its stored state allows it; False (nothing changed)
    otherwise. The check and the write are one statement, so two runs cannot both move it."""
    allowed = frozenset(s for s, targets in MOVES.items() if to in targets)
    return store.move(edition.key, to, allowed_from=allowed, note=note, now=now)


def move_or_explain(
    store: StateStore, edition: Edition, to: str, *, note: str, now: datetime
) -> None:
    """Like `move`, but a refused move is a UsageError naming the edition's state."""
    if move(store, edition, to, note=note, now=now):
        return
    state = store.state(edition.key)
    raise UsageError(f"edition {edition.key} is {state}; it cannot become {to}")
