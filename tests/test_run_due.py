"""`digest run-due` under a clock the test moves: builds, test sends and sends happen once
each, at their time, across DST changes in two zones; outages, approvals, empty periods."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import Run
from scheduling import Clock, add_articles, add_readers, digest, tick, write_config

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


# -- the sample project: a weekly digest on Mondays at 07:00 London, approval required -----
MONDAY = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)  # W48 is sent then (London is on UTC)
W48 = "weekly/2026-W48"


@pytest.fixture
def sample(run: Run, config: Config, store: Store) -> Config:
    """The sample project with its articles and subscribers, only the weekly digest."""
    run("ingest")
    run("subscribers", "import", "subscribers/", "--skip-invalid")
    return config


def _weekly_tick(sample: Config, store: Store, at: datetime) -> list[str]:
    return [f"{a.step}: {a.detail}" for a in tick(sample, store, Clock(at), only="weekly")]


def test_an_unapproved_edition_waits_for_approval_then_is_missed_never_sent(
    sample: Config, store: Store
) -> None:
    built = _weekly_tick(sample, store, MONDAY - 6 * HOUR)
    assert built[0].startswith("build: built: 17 articles")
    assert built[1] == "test: test-sent to editors@digest.example.com"
    assert store.schedules.state(W48) == "test-sent"
    assert _weekly_tick(sample, store, MONDAY) == [
        "wait: not approved yet; waiting until 2026-11-30T09:00+00:00"
    ]
    missed = _weekly_tick(sample, store, MONDAY + 2 * HOUR + timedelta(minutes=1))
    assert missed == ["missed: the send due at 2026-11-30T07:00+00:00 was not started "
                      "within schedule.grace; skipped"]  # fmt: skip
    assert _weekly_tick(sample, store, MONDAY + 3 * HOUR) == []  # reported once
    assert sum(store.deliveries.counts(W48).values()) == 0


def test_an_approved_edition_is_scheduled_then_sent_once(
    run: Run, sample: Config, store: Store
) -> None:
    _weekly_tick(sample, store, MONDAY - 6 * HOUR)
    run("edition", "approve", "weekly", "--week", "2026-W48")
    scheduled = _weekly_tick(sample, store, MONDAY - HOUR)
    assert scheduled == ["schedule: sends at 2026-11-30T07:00+00:00"]
    sent = _weekly_tick(sample, store, MONDAY)
    assert sent == ["send: started", "send: sent 26, skipped 0, suppressed 0, failed 0",
                    "sent: every delivery settled"]  # fmt: skip
    for later in (MONDAY + HOUR, MONDAY + 24 * HOUR):
        assert _weekly_tick(sample, store, later) == []
    assert store.deliveries.counts(W48)["sent"] == 26
    assert [e.state for e in store.schedules.log(W48)] == [
        "test-sent",
        "approved",
        "scheduled",
        "sending",
        "sent",
    ]


def test_a_send_missed_by_an_outage_is_caught_up_once_within_grace(
    run: Run, sample: Config, store: Store
) -> None:
    _weekly_tick(sample, store, MONDAY - 6 * HOUR)
    run("edition", "approve", "weekly", "--week", "2026-W48")
    # the machine was down from 01:00 to 08:30: the 07:00 send is caught up, once
    caught = _weekly_tick(sample, store, MONDAY + 90 * timedelta(minutes=1))
    assert caught[:2] == ["send: started", "send: sent 26, skipped 0, suppressed 0, failed 0"]
    assert _weekly_tick(sample, store, MONDAY + 91 * timedelta(minutes=1)) == []
    assert store.deliveries.counts(W48)["sent"] == 26


def test_a_run_after_the_grace_reports_the_missed_send_and_skips_it(
    sample: Config, store: Store
) -> None:
    _weekly_tick(sample, store, MONDAY - 6 * HOUR)  # built, then the machine went down for a day
    out = _weekly_tick(sample, store, MONDAY + 25 * HOUR)
    assert out == ["missed: the send due at 2026-11-30T07:00+00:00 was not started "
                   "within schedule.grace; skipped"]  # fmt: skip
    assert store.schedules.state(W48) == "test-sent"
    assert sum(store.deliveries.counts(W48).values()) == 0


def test_an_empty_week_is_built_as_skipped_reported_and_never_sent(
    sample: Config, store: Store
) -> None:
    later = datetime(2027, 3, 1, 7, 0, tzinfo=UTC)  # no articles in 2027-W08
    out = _weekly_tick(sample, store, later - 6 * HOUR)
    assert out == [
        "build: built: 0 articles (skipped)",
        "skip: skipped: 0 articles, fewer than min_articles 1; nothing is sent for this period",
    ]
    assert _weekly_tick(sample, store, later) == []
    key = "weekly/2027-W08"
    assert store.schedules.state(key) == "skipped"
    assert sum(store.deliveries.counts(key).values()) == 0
    assert store.schedules.steps("weekly", later - 30 * HOUR)[later] == {
        "build": "done",
        "send": "skipped",
    }


def test_a_dry_run_prints_what_is_due_and_changes_nothing(sample: Config, store: Store) -> None:
    out = [a.line() for a in tick(sample, store, Clock(MONDAY), only="weekly", dry_run=True)]
    assert out == [
        "2026-11-30T07:00+00:00  weekly/2026-W48  build: would build the edition",
        "2026-11-30T07:00+00:00  weekly/2026-W48  test: would test-send to "
        "editors@digest.example.com",
        "2026-11-30T07:00+00:00  weekly/2026-W48  send: would start sending (if approved)",
    ]
    assert store.editions.get(W48) is None
    assert store.schedules.checked_to("weekly") is None


def test_run_due_sends_an_ab_tests_winner_to_the_rest_once_after_the_wait(
    run: Run, sample: Config, store: Store, project: Path
) -> None:
    import yaml

    from digest.config import load_config

    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    weekly = next(d for d in data["digests"] if d["key"] == "weekly")
    weekly["experiment"] = {
        "variants": [{"key": "A"}, {"key": "B", "subject": "Your week, in short"}],
        "test_share": 0.5, "wait": "4h", "min_sample": 1,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    ab = load_config(path)

    def at(when: datetime) -> list[str]:
        return [f"{a.step}: {a.detail}" for a in tick(ab, store, Clock(when), only="weekly")]

    at(MONDAY - 6 * HOUR)
    run("edition", "approve", "weekly", "--week", "2026-W48")
    at(MONDAY - HOUR)
    at(MONDAY)  # the test: about half the list, split between A and B
    tested = store.deliveries.counts(W48)["sent"]
    assert 0 < tested < 26
    assert at(MONDAY + 2 * HOUR) == []  # still inside the wait: nothing decided, nothing sent
    done = at(MONDAY + 5 * HOUR)
    assert len(done) == 1 and done[0].startswith("winner: variant ")
    rows = list(store.deliveries.rows(W48))
    assert len(rows) == 26 and {r["state"] for r in rows} == {"sent"}
    assert sum(r["variant"].endswith(":rest") for r in rows) == 26 - tested
    assert at(MONDAY + 6 * HOUR) == [] and len(list(store.deliveries.rows(W48))) == 26


def _statements(store: Store, when: datetime, config: Config) -> int:
    """How many SQL statements one run-due at `when` executes."""
    from sqlalchemy import event

    count = 0

    def counted(*_args: object) -> None:
        nonlocal count
        count += 1

    event.listen(store.engine, "before_cursor_execute", counted)
    try:
        tick(config, store, Clock(when))
    finally:
        event.remove(store.engine, "before_cursor_execute", counted)
    return count


def test_run_due_reads_no_more_as_sent_editions_pile_up(sample: Config, store: Store) -> None:
    """Years of sent editions, of a digest without a sample test and of one since removed
    from digest.yaml: an idle run-due executes as many statements as with none, and
    reports nothing."""
    from editions import make_edition

    from digest import lifecycle

    quiet = MONDAY + 6 * 24 * HOUR + 3 * HOUR  # Sunday 10:00: neither digest has a step due
    assert tick(sample, store, Clock(quiet)) == []  # the first run records its marks
    before = _statements(store, quiet + HOUR, sample)
    for name in ("weekly", "removed"):
        for week in range(1, 41):
            edition = make_edition(1, ("politics",), digest=name, period=f"2025-W{week:02d}")
            store.editions.save(edition)
            for state in (lifecycle.APPROVED, lifecycle.SENDING, lifecycle.SENT):
                assert lifecycle.move(store.schedules, edition, state, note="", now=quiet)
    assert len(store.schedules.keys_in([lifecycle.SENT])) == 80
    assert tick(sample, store, Clock(quiet + 2 * HOUR)) == []
    assert _statements(store, quiet + 3 * HOUR, sample) == before
