"""What one edition covers: an ISO week, a date or a month, in the digest's own time zone.

A digest's `cadence` says which. Each period is [start, end) between local midnights, and
is named by a label that is also the edition's period: `2026-W48`, `2026-11-25`, `2026-11`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from digest.errors import UsageError
from digest.weeks import current_week, parse_week

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
OPTION = {"weekly": "--week", "daily": "--date", "monthly": "--month"}
EXAMPLE = {"weekly": "2026-W48", "daily": "2026-11-25", "monthly": "2026-11"}


@dataclass(frozen=True)
class Period:
    """One period; `start` and `end` are aware local datetimes, `end` exclusive. `number`
    varies from one period to the next (it rotates the fallback Thoughts prompts)."""

    cadence: str
    label: str
    start: datetime
    end: datetime
    number: int


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    # Through UTC: a midnight that a DST jump skips becomes the first instant of that day.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC).astimezone(tz)


def _day(day: date, tz: ZoneInfo) -> Period:
    end = _midnight(day + timedelta(days=1), tz)
    return Period("daily", day.isoformat(), _midnight(day, tz), end, day.toordinal())


def _month(year: int, month: int, tz: ZoneInfo) -> Period:
    first = date(year, month, 1)
    following = date(year + month // 12, month % 12 + 1, 1)
    label = f"{year}-{month:02d}"
    return Period("monthly", label, _midnight(first, tz), _midnight(following, tz), month)


def _from_week(value: str, tz: ZoneInfo) -> Period:
    week = parse_week(value, tz)
    return Period("weekly", week.label, week.start, week.end, week.number)


def _parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"date {value!r}: not a date like 2026-11-25") from None


def parse_period(cadence: str, value: str, tz: ZoneInfo) -> Period:
    """The period of a `cadence` digest that `value` names.

    A week, date or month is taken as such; a date also names the week or month that
    contains it. Anything else is a UsageError that says which option the digest takes.
    """
    value = value.strip()
    if _DATE.match(value):
        day = _parse_date(value)
        return containing(cadence, datetime.combine(day, time(12), tzinfo=tz), tz)
    if cadence == "weekly":
        return _from_week(value, tz)  # its errors say what a week looks like
    m = _MONTH.match(value)
    if cadence == "monthly" and m and 1 <= int(m.group(2)) <= 12:
        return _month(int(m.group(1)), int(m.group(2)), tz)
    raise UsageError(
        f"{value!r} does not name a period of a {cadence} digest",
        hint=f"use {OPTION[cadence]} {EXAMPLE[cadence]} (or --date with a day inside it)",
    )


def containing(cadence: str, instant: datetime, tz: ZoneInfo) -> Period:
    """The period that contains the aware `instant`, as seen in `tz`."""
    local = instant.astimezone(tz)
    if cadence == "weekly":
        week = current_week(instant, tz)
        return Period("weekly", week.label, week.start, week.end, week.number)
    if cadence == "daily":
        return _day(local.date(), tz)
    return _month(local.year, local.month, tz)


def ended_by(cadence: str, instant: datetime, tz: ZoneInfo) -> Period:
    """The last period that ended at or before `instant`: what a send at `instant` covers."""
    current = containing(cadence, instant, tz)
    return containing(cadence, current.start - timedelta(seconds=1), tz)


def choose(week: str | None, day: str | None, month: str | None) -> str | None:
    """The one period option a command was given (--week, --date or --month), or None."""
    given = [v for v in (week, day, month) if v is not None]
    if len(given) > 1:
        raise UsageError("give one of --week, --date or --month")
    return given[0] if given else None
