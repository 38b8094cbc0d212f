"""`digest run-due` under a clock the test moves: builds, test sends and sends happen once
each, at their time, across DST changes in two zones; outages, approvals, empty periods."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from scheduling import Clock, add_articles, add_readers, digest, steps, tick, write_config

from digest.config import Config
from digest.store import Store

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
HOUR = timedelta(hours=1)


def _two_zones(project: Path) -> Config:
    """A weekly digest at 02:00 on Sundays in Berlin, a daily one at 02:00 in New York:
    the hour both zones skip in spring and (Berlin) repeat in autumn."""
    return write_config(
        project,
        [
            digest("weekly", "weekly", ("politics",), "Europe/Berlin", cron="0 2 * * SUN",
                   build_lead="2h", require_approval=False, test_to=["editor@example.com"]),
            digest("daily", "daily", ("tech",), "America/New_York", cron="0 2 * * *",
                   build_lead="1h", require_approval=False),
        ],
        batch_size=10,
    )  # fmt: skip


def _at_two(day: date, tz: ZoneInfo) -> datetime:
    """02:00 on `day` in `tz`; on the day the clocks skip 02:00, the first minute after."""
    wall = datetime.combine(day, time(2), tzinfo=tz)
    if wall.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall.replace(tzinfo=None):
        wall = datetime.combine(day, time(3), tzinfo=tz)  # 02:00 does not exist that day
    return wall.astimezone(UTC)


@pytest.mark.parametrize(
    "start",
    [
        datetime(2026, 3, 5, tzinfo=UTC),  # New York springs forward 8 March, Berlin 29 March
        datetime(2026, 10, 20, tzinfo=UTC),  # Berlin falls back 25 October, New York 1 November
    ],
    ids=["spring", "autumn"],
)
def test_a_month_of_weekly_and_daily_sends_across_both_dst_changes_in_two_zones(
    project: Path, store: Store, start: datetime
) -> None:
    config = _two_zones(project)
    end = start + timedelta(days=30)
    add_articles(store, start - timedelta(days=8), end, ("politics", "tech"), timedelta(hours=6))
    add_readers(store, ["Europe/Berlin", "Asia/Tokyo"], digests=["weekly"], prefix="w")
    add_readers(store, ["America/New_York"], topics=["tech"], digests=["daily"], prefix="d")
    clock = Clock(start)
    while clock() < end:  # run-due every hour for a month
        tick(config, store, clock)
        clock.set(clock() + HOUR)

    days = [(start + timedelta(days=i)).date() for i in range(-1, 32)]
    sundays = [_at_two(d, BERLIN) for d in days if d.weekday() == 6]
    mornings = [_at_two(d, NEW_YORK) for d in days]
    expected_weekly = [t for t in sundays if start <= t < end]
    expected_daily = [t for t in mornings if start + HOUR <= t < end]
    runs = store.schedules.history(limit=10_000)
    sends = {d: sorted(r.due_at for r in runs if r.digest == d and r.step == "send"
                       and r.outcome == "done") for d in ("weekly", "daily")}  # fmt: skip
    assert sends == {"weekly": expected_weekly, "daily": expected_daily}
    # every step ran at its time: build a lead ahead, the send on the dot
    for r in (r for r in runs if r.outcome == "done"):
        lead = {"weekly": 2 * HOUR, "daily": HOUR}[r.digest] if r.step != "send" else 0 * HOUR
        assert r.at == r.due_at - lead, r
    assert Counter((r.digest, r.step, r.outcome) for r in runs) == {
        ("weekly", "build", "done"): len(expected_weekly),
        ("weekly", "test", "done"): len(expected_weekly),
        ("weekly", "send", "done"): len(expected_weekly),
        ("daily", "build", "done"): len(expected_daily),
        ("daily", "send", "done"): len(expected_daily),
    }
    # each edition went to its readers exactly once
    for key, state, _ in store.editions.list():
        readers = 2 if key.startswith("weekly") else 1
        assert (state, store.deliveries.counts(key)["sent"]) == ("sent", readers), key
