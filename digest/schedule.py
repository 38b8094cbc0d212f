"""When each digest is built, test-sent and sent: its cron expression in its time zone.

Pure timing, no store: `occurrences` lists the scheduled sends in a window, each with its
build time, the moment sending starts and the period its edition covers. Cron times are
wall-clock times in `schedule.timezone`, evaluated by cronsim the way Debian's cron does:
a time a spring DST jump skips runs at the first minute after the jump, a time an
autumn change repeats runs once (the first), so DST neither skips nor doubles a send.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from cronsim import CronSim

from digest.config import Config, Digest
from digest.periods import ended_by

# With local-time delivery the cron's time of day comes first at UTC+14 (Kiritimati) and
# last at UTC-12: sending starts at the first, and every moment falls within this span.
EARLIEST_ZONE = timezone(timedelta(hours=14))
LOCAL_SPAN = timedelta(hours=27)  # UTC+14 .. UTC-12, plus an hour of DST either way
MAX_OCCURRENCES = 10_000  # bound on one listing, whatever the cron expression


@dataclass(frozen=True)
class Occurrence:
    """One scheduled send of a digest.

    `due` is the cron time in the schedule's zone; `send_at` is when sending starts (`due`,
    or with local time the first zone's moment); `build_at` is `build_lead` before that;
    `period` is the period the edition covers: the last one ended by `due`.
    """

    digest: str
    due: datetime
    send_at: datetime
    build_at: datetime
    period: str
    local_time: bool

    @property
    def edition_key(self) -> str:
        return f"{self.digest}/{self.period}"

    def moment(self, zone: str) -> datetime:
        """When a subscriber in `zone` is due: the cron's wall-clock time there (local
        time), or the one moment for everyone. An unknown zone gets the first moment."""
        if not self.local_time:
            return self.due.astimezone(UTC)
        try:
            tz: tzinfo = ZoneInfo(zone)
        except (KeyError, ValueError):
            return self.send_at
        return wall_time_in(self.due, tz)


def wall_time_in(when: datetime, tz: tzinfo) -> datetime:
    """The instant (UTC) at which `tz` shows `when`'s wall-clock date and time. A time a
    DST jump skips there becomes the time as many minutes after the jump; a repeated
    time is its first pass."""
    local = when.replace(tzinfo=tz, fold=0)
    return local.astimezone(UTC)


def occurrences(
    config: Config, digest: Digest, after: datetime, until: datetime
) -> list[Occurrence]:
    """The scheduled sends of `digest` whose cron time is in (after, until], in order."""
    cron = digest.schedule.cron
    if cron is None:
        return []
    out: list[Occurrence] = []
    for due in _cron_times(cron, config.schedule_timezone(digest), after):
        if due > until or len(out) >= MAX_OCCURRENCES:
            break
        out.append(occurrence(config, digest, due))
    return out


def occurrence(config: Config, digest: Digest, due: datetime) -> Occurrence:
    """The scheduled send of `digest` whose cron time is `due` (aware, any zone)."""
    schedule = digest.schedule
    due = due.astimezone(config.schedule_timezone(digest))
    local = schedule.local_time
    send_at = wall_time_in(due, EARLIEST_ZONE) if local else due.astimezone(UTC)
    period = ended_by(digest.cadence, due, config.digest_timezone(digest))
    return Occurrence(
        digest=digest.key,
        due=due,
        send_at=send_at,
        build_at=send_at - schedule.lead,
        period=period.label,
        local_time=local,
    )


def upcoming(config: Config, digest: Digest, now: datetime, count: int) -> list[Occurrence]:
    """The next `count` scheduled sends whose sending has not started by `now`."""
    out: list[Occurrence] = []
    start = now - LOCAL_SPAN if digest.schedule.local_time else now
    for due in _cron_times(digest.schedule.cron or "", config.schedule_timezone(digest), start):
        found = occurrence(config, digest, due)
        if found.send_at > now:
            out.append(found)
        if len(out) >= count:
            break
    return out


def for_period(config: Config, digest: Digest, period: str, now: datetime) -> Occurrence | None:
    """The scheduled send that covers `period`, looking from a little before `now` up to
    MAX_OCCURRENCES sends ahead; None when the schedule never sends that period then."""
    if digest.schedule.cron is None:
        return None
    start = now - digest.schedule.grace_period - LOCAL_SPAN
    tz = config.schedule_timezone(digest)
    for n, due in enumerate(_cron_times(digest.schedule.cron, tz, start)):
        found = occurrence(config, digest, due)
        if found.period == period:
            return found
        if found.period > period or n >= MAX_OCCURRENCES:
            return None
    return None


def _cron_times(cron: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Cron times after the instant `after`, each once, as aware datetimes in `tz`."""
    if not cron:
        return
    last = after.astimezone(UTC)
    for found in CronSim(cron, after.astimezone(tz)):
        at = found.astimezone(UTC)
        # cronsim walks wall-clock time: after a repeated hour it may name an instant
        # already passed; keep each instant once, in order
        if at > last:
            last = at
            yield found
