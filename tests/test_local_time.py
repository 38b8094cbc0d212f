"""Local-time delivery: each subscriber gets the edition at the cron's time of day in their
own zone; the outbox (and SMTP) sends each zone when its moment comes, SendGrid gets each
group ahead with its `send_at`. The audience is fixed when sending starts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fake_sendgrid import FakeSendGrid
from fake_smtp import FakeSmtp
from fake_smtp import smtp_server as smtp_server_fixture  # noqa: F401
from scheduling import Clock, add_articles, add_readers, digest, tick, write_config

from digest.config import Config
from digest.dispatch import cancel_edition
from digest.store import Store
from digest.transports.base import Transport

ZONES = {  # five zones and when 07:00 on 25 November comes there
    "Asia/Tokyo": datetime(2026, 11, 24, 22, 0, tzinfo=UTC),
    "Asia/Kolkata": datetime(2026, 11, 25, 1, 30, tzinfo=UTC),
    "Europe/Berlin": datetime(2026, 11, 25, 6, 0, tzinfo=UTC),
    "America/New_York": datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
    "America/Los_Angeles": datetime(2026, 11, 25, 15, 0, tzinfo=UTC),
}
KEY = "morning/2026-11-24"
START = datetime(2026, 11, 24, tzinfo=UTC)


def _morning(project: Path, store: Store, **delivery: object) -> Config:
    config = write_config(
        project,
        [digest("morning", "daily", ("politics",), "Europe/London", cron="0 7 * * *",
                build_lead="1h", require_approval=False, local_time=True, grace="1h")],
        batch_size=10, **delivery,
    )  # fmt: skip
    add_articles(store, START, START + timedelta(hours=15), ["politics"], timedelta(hours=3))
    add_readers(store, list(ZONES))
    return config


def _run_day(
    config: Config, store: Store, clock: Clock, after_tick: Callable[[], None] = lambda: None,
    **more: object,
) -> None:  # fmt: skip
    while clock() < START + timedelta(hours=40):  # run-due every 30 minutes
        tick(config, store, clock, **more)
        after_tick()
        if clock() == datetime(2026, 11, 24, 23, 0, tzinfo=UTC):  # sending has begun
            add_readers(store, ["Europe/Berlin"], prefix="late")
        clock.set(clock() + timedelta(minutes=30))


def test_the_outbox_sends_each_zone_at_seven_its_own_time_and_adds_no_late_subscriber(
    project: Path, store: Store
) -> None:
    config = _morning(project, store)
    _run_day(config, store, Clock(START))
    rows = list(store.deliveries.rows(KEY))
    sent = {r["email"]: r["sent_at"] for r in rows}
    assert sent == {f"reader{i}@example.org": at for i, at in enumerate(ZONES.values())}
    assert "late0@example.org" not in sent  # subscribed after sending began
    assert all(r["state"] == "sent" and r["attempts"] == 1 for r in rows)
    assert store.schedules.state(KEY) == "sent"


def test_smtp_delivers_each_zone_when_its_moment_comes(
    project: Path, store: Store, smtp_server: FakeSmtp
) -> None:
    smtp = {"host": smtp_server.host, "port": smtp_server.port, "security": "none"}
    config = _morning(project, store, smtp=smtp)
    clock = Clock(START)
    arrived: dict[str, datetime] = {}

    def note_arrivals() -> None:  # what the SMTP server has taken by the end of this run
        for message in smtp_server.messages:
            for to in message.rcpt_tos:
                arrived.setdefault(to, clock())

    _run_day(config, store, clock, note_arrivals, transport="smtp")
    assert arrived == {f"reader{i}@example.org": at for i, at in enumerate(ZONES.values())}
    assert len(smtp_server.messages) == len(ZONES)


def test_sendgrid_gets_each_group_ahead_with_send_at_seven_in_its_zone(
    project: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(START)
    with FakeSendGrid(now=clock) as fake:
        monkeypatch.setenv("SENDGRID_API_KEY", fake.api_key)
        config = _morning(project, store, sendgrid={"host": fake.url})
        _run_day(config, store, clock, transport="sendgrid")
        send_at = {
            to["email"]: datetime.fromtimestamp(body["send_at"], UTC)
            for body in fake.requests for p in body["personalizations"] for to in p["to"]
        }  # fmt: skip
        arrived = sorted(fake.arrived)
    assert send_at == {f"reader{i}@example.org": at for i, at in enumerate(ZONES.values())}
    assert len(arrived) == len(ZONES)  # one request per group, each at most an hour ahead
    ahead = [(at - a).total_seconds() for a, at in zip(arrived, ZONES.values(), strict=True)]
    assert all(0 < seconds <= 3600 for seconds in ahead)
    assert store.schedules.state(KEY) == "sent"


def test_a_cancel_during_a_local_time_send_stops_the_zones_still_to_come(
    project: Path, store: Store
) -> None:
    config = _morning(project, store)
    clock = Clock(START)
    while clock() < datetime(2026, 11, 25, 3, 0, tzinfo=UTC):  # Tokyo and Kolkata got it
        tick(config, store, clock)
        clock.set(clock() + timedelta(minutes=30))
    edition = store.editions.get(KEY)
    assert edition is not None and edition.status == "sending"

    def no_provider_batches() -> Transport:
        raise AssertionError("the outbox has no provider batches to withdraw")

    cancel_edition(edition, store=store, make_transport=no_provider_batches, now=clock,
                   sleep=lambda _s: None)  # fmt: skip
    while clock() < START + timedelta(hours=40):
        tick(config, store, clock)
        clock.set(clock() + timedelta(minutes=30))
    counts = store.deliveries.counts(KEY)
    assert (counts["sent"], counts["pending"]) == (2, 3)
    assert store.schedules.state(KEY) == "cancelled"
