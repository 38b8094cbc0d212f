"""ISO weeks as [Monday 00:00, next Monday 00:00) in a digest's own time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from digest.errors import UsageError

_WEEK = re.compile(r"^(\d{4})-[Ww](\d{2})$")
EXAMPLE = "2026-W05"


@dataclass(frozen=True)
class Week:
    """One ISO week; `start` and `end` are aware local datetimes, `end` exclusive."""

    year: int
    number: int
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return f"{self.year}-W{self.number:02d}"


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    # A round trip through UTC moves a midnight that a DST jump skips (e.g. America/Santiago)
    # to the first instant that exists that day.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC).astimezone(tz)


def _week(day: date, tz: ZoneInfo) -> Week:
    year, number, weekday = day.isocalendar()
    monday = day - timedelta(days=weekday - 1)
    return Week(
        year, number, _local_midnight(monday, tz), _local_midnight(monday + timedelta(days=7), tz)
    )


def parse_week(value: str, tz: ZoneInfo) -> Week:
    """The ISO week `value` (e.g. "2026-W05") in `tz`; a bad or missing week is a UsageError."""
    m = _WEEK.match(value.strip())
    if not m:
        raise UsageError(
            f"week {value!r}: expected an ISO week like {EXAMPLE}",
            hint="YEAR-Wnn with two digits, e.g. --week 2026-W48",
        )
    year, number = int(m.group(1)), int(m.group(2))
    try:
        monday = date.fromisocalendar(year, number, 1)
    except ValueError:
        last = date(year, 12, 28).isocalendar().week  # 28 December is always in the last week
        raise UsageError(
            f"week {value!r}: {year} has weeks 01 to {last}", hint=f"e.g. --week {year}-W{last:02d}"
        ) from None
    return _week(monday, tz)


def current_week(now: datetime, tz: ZoneInfo) -> Week:
    """The ISO week that contains the instant `now`, as seen in `tz`."""
    if now.tzinfo is None:
        raise ValueError("current_week needs an aware datetime")
    return _week(now.astimezone(tz).date(), tz)
