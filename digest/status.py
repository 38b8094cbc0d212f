"""What editors see: each edition's state and next action, and each schedule's next runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from digest import lifecycle, schedule
from digest.config import Config, Digest
from digest.editions import Edition
from digest.store import Store


def _at(when: datetime, config: Config, digest: Digest) -> str:
    return when.astimezone(config.schedule_timezone(digest)).strftime("%a %Y-%m-%d %H:%M %Z")


def schedule_rows(
    config: Config, digest: Digest, now: datetime, count: int
) -> list[dict[str, Any]]:
    """The next `count` scheduled sends of `digest`, as rows: time (in the schedule's zone),
    step (build, test, send), the edition and what the step does."""
    rows: list[dict[str, Any]] = []
    plan = digest.schedule
    for occ in schedule.upcoming(config, digest, now, count):
        build = "select and freeze the edition"
        if plan.require_approval:
            build += "; an editor approves it before the send"
        rows.append(_row(config, digest, occ.build_at, occ, "build", build))
        if plan.test_to:
            rows.append(_row(config, digest, occ.build_at, occ, "test",
                             f"test send to {', '.join(plan.test_to)}"))  # fmt: skip
        send = "send to every subscriber"
        if occ.local_time:
            wall = occ.due.strftime("%H:%M")
            send = f"send at {wall} in each subscriber's zone (from UTC+14 to UTC-12)"
        rows.append(_row(config, digest, occ.send_at, occ, "send", send))
    return rows


def _row(
    config: Config, digest: Digest, at: datetime, occ: schedule.Occurrence, step: str, detail: str
) -> dict[str, Any]:
    return {"digest": digest.key, "at": _at(at, config, digest), "utc": at.isoformat(),
            "step": step, "edition": occ.edition_key, "detail": detail}  # fmt: skip


def edition_rows(
    config: Config, store: Store, digest: str | None, now: datetime, last: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Each stored edition (of `digest`, or all; with `last`, the `last` made most recently),
    in key order: state, delivery counts, next action; and how many older ones were left
    out. Only the editions listed have their rows counted (a million-reader edition's
    count reads its million rows)."""
    stored = store.editions.list(digest)
    listed = stored
    if last:
        newest = sorted(stored, key=lambda e: (e[2], e[0]), reverse=True)[:last]
        listed = sorted(newest)
    rows = []
    for key, state, created in listed:
        edition = store.editions.get(key)
        if edition is None or edition.digest not in {d.key for d in config.digests}:
            continue
        counts = store.deliveries.counts(key)
        rows.append({
            "edition": key, "state": state, "created_at": created.isoformat(),
            "deliveries": counts, "next": next_action(config, store, edition, counts, now),
        })  # fmt: skip
    return rows, len(stored) - len(listed)


def next_action(
    config: Config, store: Store, edition: Edition, counts: dict[str, int], now: datetime
) -> str:
    """What happens next to `edition`, with the command when it is up to an editor."""
    digest = config.digest(edition.digest)
    named = f"{digest.key} {lifecycle.flag(edition, digest)}"
    occ = schedule.for_period(config, digest, edition.period, now)
    state = edition.status
    if state == lifecycle.SKIPPED:
        return "none: too few articles; nothing is sent for this period"
    if state == lifecycle.CANCELLED:
        return f"none (to send it after all: digest edition approve {named})"
    if state == lifecycle.SENT:
        if counts["failed"]:
            return f"{counts['failed']} failed; to resend: digest send {named} --retry-failed"
        return "none: sent"
    if state == lifecycle.SENDING:
        left = store.schedules.unsent(edition.key)
        moments = [m for m in store.schedules.moments(edition.key) if m is not None]
        later = f", next at {_at(moments[0], config, digest)}" if moments else ""
        return f"sending: {left} left{later} (digest run-due)"
    when = f" at {_at(occ.send_at, config, digest)}" if occ is not None else ""
    if state in lifecycle.EDITABLE:
        if digest.schedule.require_approval:
            return f"approve: digest edition approve {named}" + (
                f" (the send is due{when})" if occ else "")  # fmt: skip
        if occ is not None:
            return f"sends automatically{when}"
    if occ is not None and occ.send_at > now:
        return f"sends{when}"
    return f"send: digest send {named}"
