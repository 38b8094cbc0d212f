"""Exactly once under the faults that break it: each test injects one fault into a real send
through the real client and the fake SendGrid, then checks what the provider received
(no duplicate, none missing) and what the ledger says."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_sendgrid import SEND, FakeSendGrid, rate_limit_headers
from sending import KEY, NOW, SECRET, _add, edition, sendgrid_config  # noqa: F401  (fixtures)
from sqlalchemy.exc import OperationalError

from digest import send as sending
from digest.batch import IN_DOUBT
from digest.config import Config
from digest.editions import Edition
from digest.errors import BusyError, ProviderRefusedError, UsageError
from digest.store import Store
from digest.store.busy import retry_locked
from digest.store.locks import edition_lock
from digest.transports import make_transport
from digest.transports.base import OutgoingEmail, Recipient
from digest.transports.sendgrid import SendGridTransport

BATCH = 5


class Clock:
    """Simulated time shared by the sender and the fake provider; sleeping advances it."""

    def __init__(self, start: datetime) -> None:
        self.at = start
        self.slept: list[float] = []
        self.during_sleep: list[Any] = []  # callables run on the next sleep (an unsubscribe)

    def now(self) -> datetime:
        return self.at

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        while self.during_sleep:
            self.during_sleep.pop(0)()
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def fake(clock: Clock) -> Any:
    with FakeSendGrid(now=clock.now) as server:
        yield server


def _config(
    config: Config, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch, **delivery: Any
) -> Config:
    return sendgrid_config(config, fake, monkeypatch, timeout=0.5, **delivery)


def _send(
    cfg: Config, store: Store, edition: Edition, clock: Clock, **options: Any
) -> sending.SendSummary:
    transport = make_transport("sendgrid", cfg, edition_key=KEY, now=clock.now)
    return sending.send_edition(
        edition,
        config=cfg,
        ledger=store.deliveries,
        transport=transport,
        secret=SECRET,
        now=clock.now,
        options=sending.SendOptions(batch_size=BATCH, **options),
        sleep=clock.sleep,
        rng=random.Random(3),
    )


def _received(fake: FakeSendGrid) -> Counter[str]:
    return Counter(fake.delivered())


def _states(store: Store) -> Counter[str]:
    return Counter(r["state"] for r in store.deliveries.rows(KEY))


def _exactly_once(fake: FakeSendGrid, emails: list[str]) -> None:
    got = _received(fake)
    assert [a for a, n in got.items() if n > 1] == []  # no duplicate
    assert sorted(got) == sorted(emails)  # none missing


# -- calls whose answer never came ---------------------------------------------


def test_default_mode_settles_a_dropped_answer_as_in_doubt_and_never_resends_it(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch)
    subs = [s.email for s in _add(store, 12)]
    fake.drop_next(accept=True)  # taken by the provider, the answer lost on the way
    summary = _send(cfg, store, edition, clock)
    assert len([a for a in fake.answers if a[0] == SEND]) == 3  # no second try of batch 1
    _exactly_once(fake, subs)  # the batch in doubt did arrive, once
    assert (summary.sent, summary.failed, summary.in_doubt) == (7, 5, 5)
    failed = list(store.deliveries.rows(KEY, state="failed"))
    assert {r["email"] for r in failed} == set(subs[:5])
    assert all(r["last_error"].startswith(IN_DOUBT) for r in failed)
    assert clock.slept == []  # settled at once, no retry wait


def test_default_mode_settles_a_timeout_as_in_doubt(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch)
    subs = [s.email for s in _add(store, 8)]
    fake.slow_next(1.0)  # longer than the client's 0.5 s timeout
    summary = _send(cfg, store, edition, clock)
    _exactly_once(fake, subs)
    assert (summary.sent, summary.failed) == (3, 5)
    assert _states(store) == {"sent": 3, "failed": 5}


@pytest.mark.parametrize("fault", ["drop", "timeout"])
def test_strict_mode_cancels_a_call_in_doubt_and_sends_its_rows_again_once(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch, fault: str,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch)
    subs = [s.email for s in _add(store, 12)]
    if fault == "drop":
        fake.drop_next(accept=True)
    else:
        fake.slow_next(1.0)
    summary = _send(cfg, store, edition, clock, strict=True)
    _exactly_once(fake, subs)
    assert len(fake.cancelled) == 1 and summary.withdrawn == 1
    assert (summary.sent, summary.failed, summary.in_doubt) == (12, 0, 0)
    assert _states(store) == {"sent": 12}
    first = fake.requests[0]["batch_id"]
    resent = {r["provider_batch_id"] for r in store.deliveries.rows(KEY)}
    assert first in fake.cancelled and first not in resent  # sent again under a new batch


def test_a_cancel_refused_for_the_hold_limit_waits_for_the_oldest_hold_to_lapse(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch)
    subs = [s.email for s in _add(store, 6)]
    # 10 batches cancelled elsewhere on the account, unknown to this store, lapsing soon
    other = make_transport("sendgrid", cfg, edition_key="other", now=clock.now)
    assert isinstance(other, SendGridTransport)
    for i in range(10):
        batch = other.create_batch()
        other.send(_scheduled(batch, clock.now() + timedelta(seconds=30 + i)))
        other.cancel_batch(batch)
    fake.drop_next(accept=True)
    summary = _send(cfg, store, edition, clock, strict=True)
    assert fake.cancels_refused >= 1  # the 11th cancel was refused at first ...
    _exactly_once(fake, subs)  # ... and went through once a hold lapsed
    assert summary.in_doubt == 0 and _states(store) == {"sent": 6}
    assert clock.now() - NOW >= timedelta(seconds=30)


def test_strict_mode_never_has_a_batch_in_flight_that_could_not_be_cancelled(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch)
    subs = [s.email for s in _add(store, 5)]
    transport = make_transport("sendgrid", cfg, edition_key=KEY, now=clock.now)
    assert isinstance(transport, SendGridTransport)
    for i in range(10):  # ten holds this store made, lapsing 11 to 20 minutes from now
        batch = transport.create_batch()
        until = clock.now() + timedelta(minutes=11 + i)
        transport.send(_scheduled(batch, until))
        transport.cancel_batch(batch)
        store.deliveries.add_hold(batch, "other/edition", until=until, now=clock.now())
    fake.drop_next(accept=True)
    summary = _send(cfg, store, edition, clock, strict=True)
    # it waited for room before sending, so the cancel it then needed was never refused
    assert fake.cancels_refused == 0 and clock.now() >= NOW + timedelta(minutes=11)
    _exactly_once(fake, subs)
    assert summary.withdrawn == 1 and _states(store) == {"sent": 5}


def _scheduled(batch: str, send_at: datetime) -> OutgoingEmail:
    return OutgoingEmail(
        subject="s", html="<p>h</p>", text="t", from_email="news@example.com", from_name="",
        reply_to=None, recipients=(Recipient(1, "elsewhere@example.org"),),
        batch_id=batch, send_at=send_at,
    )  # fmt: skip


# -- refusals that prove nothing was taken ---------------------------------------


def test_an_unsubscribe_during_a_rate_limit_wait_is_honoured_by_the_retry(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch)
    subs = _add(store, 5)
    leaver = subs[2]
    fake.fail_next(429, headers=rate_limit_headers(clock.now().timestamp() + 10))
    clock.during_sleep.append(
        lambda: store.subscribers.set_status(
            leaver.id or 0, "unsubscribed", reason="one-click", now=clock.now()
        )
    )
    summary = _send(cfg, store, edition, clock)
    assert clock.slept and clock.slept[0] >= 10
    _exactly_once(fake, [s.email for s in subs if s is not leaver])
    assert _states(store) == {"sent": 4, "suppressed": 1}
    assert summary.sent == 4


def test_a_refused_api_key_stops_at_the_first_request_and_leaves_every_row_pending(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong")
    _add(store, 12)
    with pytest.raises(ProviderRefusedError, match="401") as info:
        _send(cfg, store, edition, clock)
    assert info.value.exit_code == 4
    assert fake.answers == [(SEND, 401)]  # one request, not one per batch and retry
    assert _states(store) == {"pending": 12}
    assert clock.slept == []


def test_a_refused_key_in_strict_mode_stops_before_any_mail_is_sent(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong")
    _add(store, 3)
    with pytest.raises(ProviderRefusedError):
        _send(cfg, store, edition, clock, strict=True)
    assert len(fake.answers) == 1 and fake.requests == []
    assert _states(store) == {"pending": 3}


def test_batches_failing_in_a_row_stop_the_run_and_leave_the_rest_pending(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch, max_failed_batches=2)
    _add(store, 20)
    fake.fail_next(400, 100, message="The from address does not match a verified Sender")
    with pytest.raises(ProviderRefusedError, match="2 batches in a row failed"):
        _send(cfg, store, edition, clock)
    assert len(fake.answers) == 2
    assert _states(store) == {"failed": 10, "pending": 10}


# -- the edition and the store -----------------------------------------------------


def test_a_send_refuses_an_edition_that_changed_after_it_was_read(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch)
    _add(store, 3)
    rebuilt = edition.with_items(edition.items[:1])
    store.editions.save(rebuilt, replace=True)  # `build --force` won the race
    with pytest.raises(UsageError, match="changed or was removed since this send read it"):
        _send(cfg, store, edition, clock)  # the stale copy
    assert fake.answers == [] and sum(store.deliveries.counts(KEY).values()) == 0
    summary = _send(cfg, store, rebuilt, clock)
    assert summary.sent == 3


def test_a_send_rides_out_another_writer_holding_the_database(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch)
    subs = [s.email for s in _add(store, 12)]
    held, release = threading.Event(), threading.Event()

    def writer() -> None:  # a long import: one write transaction held for a while
        raw = store.engine.raw_connection()
        sqlite = store.engine.dialect.name == "sqlite"
        try:
            raw.cursor().execute(
                "BEGIN IMMEDIATE" if sqlite else "LOCK TABLE deliveries IN EXCLUSIVE MODE"
            )
            held.set()
            release.wait(10)
            raw.rollback()
        finally:
            raw.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert held.wait(10)
        threading.Timer(1.5, release.set).start()
        summary = _send(cfg, store, edition, clock)
    finally:
        release.set()
        thread.join(10)
    assert summary.sent == 12
    _exactly_once(fake, subs)


def test_a_write_that_finds_the_database_locked_is_tried_again_within_a_bound() -> None:
    calls: list[int] = []
    now = [0.0]

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE", {}, Exception("database is locked"))
        return "done"

    def sleep(s: float) -> None:
        now[0] += s

    assert retry_locked(flaky, what="record", clock=lambda: now[0], sleep=sleep) == "done"
    assert len(calls) == 3

    def always() -> str:
        raise OperationalError("UPDATE", {}, Exception("database is locked"))

    with pytest.raises(BusyError, match="record: the database stayed locked for 5 s"):
        retry_locked(always, what="record", wait=5, clock=lambda: now[0], sleep=sleep)


def test_strict_mode_refuses_a_timeout_that_outlasts_the_cancel_window(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch)
    sg = cfg.delivery.sendgrid.model_copy(update={"timeout": 90.0})
    cfg = cfg.model_copy(update={"delivery": cfg.delivery.model_copy(update={"sendgrid": sg})})
    _add(store, 2)
    with pytest.raises(UsageError, match=r"must be shorter than .* \(60 s\)"):
        _send(cfg, store, edition, clock, strict=True)
    assert fake.answers == [] and sum(store.deliveries.counts(KEY).values()) == 0


# -- through the commands -----------------------------------------------------------


def _point_at(project: Path, fake: FakeSendGrid) -> None:
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["delivery"]["sendgrid"]["host"] = fake.url
    data["delivery"]["sendgrid"]["timeout"] = 0.5
    data["delivery"]["batch_size"] = BATCH
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


def test_deliveries_lists_who_did_not_get_the_edition_and_why(
    project: Path, store: Store, edition: Edition, fake: FakeSendGrid, run: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    _point_at(project, fake)
    monkeypatch.setenv("SENDGRID_API_KEY", fake.api_key)
    subs = [s.email for s in _add(store, 8)]
    fake.drop_next(accept=True)
    result = run("send", "weekly", "--week", "2026-w48", "--transport", "sendgrid", expect=3)
    assert "sent 3" in result.output and "in doubt 5" in result.output
    listed = json.loads(run("deliveries", "weekly", "--week", "2026-W48", "--json").output)
    assert sorted(r["email"] for r in listed) == sorted(subs)
    assert {"email", "state", "variant", "attempts", "provider_message_id",
            "provider_batch_id", "last_error", "sent_at"} <= set(listed[0])  # fmt: skip
    failed = json.loads(
        run("deliveries", "weekly", "--week", "2026-W48", "--state", "failed", "--json").output
    )
    assert [r["email"] for r in failed] == subs[:5]
    assert all(r["state"] == "failed" and "in doubt" in r["last_error"] for r in failed)
    table = run("deliveries", "weekly", "--week", "2026-W48", "--state", "sent").output
    assert all(e in table for e in subs[5:]) and subs[0] not in table


def test_a_refused_key_exits_4_with_one_line_and_no_traceback(
    project: Path, store: Store, edition: Edition, fake: FakeSendGrid, run: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    _point_at(project, fake)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.revoked")
    _add(store, 4)
    result = run("send", "weekly", "--week", "2026-W48", "--transport", "sendgrid", expect=4)
    assert "error: sendgrid HTTP 401" in result.output and "Traceback" not in result.output
    assert "still pending" in result.output
    assert store.deliveries.counts(KEY)["pending"] == 4 and len(fake.answers) == 1


def test_an_edition_cannot_be_rebuilt_or_edited_while_a_send_holds_it(
    project: Path, store: Store, edition: Edition, run: Any
) -> None:
    edition = replace(edition, status="draft")  # a draft an editor may still change
    store.editions.update(edition)
    with edition_lock(store.engine, KEY):
        result = run("build", "weekly", "--week", "2026-W48", "--force", expect=1)
        assert "a send or a change of weekly/2026-W48 is already running" in result.output
        article = edition.items[0].article.id
        run("edition", "drop", "weekly", "--week", "2026-W48", article, expect=1)
    assert store.editions.get(KEY) == edition


def test_a_cancel_answered_after_the_deadline_proves_nothing_and_nothing_is_resent(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch)
    subs = [s.email for s in _add(store, 5)]
    transport = make_transport("sendgrid", cfg, edition_key=KEY, now=clock.now)
    assert isinstance(transport, SendGridTransport)
    real_cancel = transport.cancel_batch

    def slow_cancel(batch_id: str) -> None:
        real_cancel(batch_id)
        clock.at += timedelta(seconds=90)  # the answer comes past send time - margin

    monkeypatch.setattr(transport, "cancel_batch", slow_cancel)
    fake.drop_next(accept=True)
    summary = sending.send_edition(
        edition, config=cfg, ledger=store.deliveries, transport=transport, secret=SECRET,
        now=clock.now, options=sending.SendOptions(batch_size=BATCH, strict=True),
        sleep=clock.sleep,
    )  # fmt: skip
    assert max(_received(fake).values(), default=0) <= 1  # never resent on a late answer
    assert summary.in_doubt == 5 and _states(store) == {"failed": 5}
    assert len(fake.requests) == 1 and subs


# -- several requests in flight -------------------------------------------------------


def test_requests_in_flight_overlap_up_to_the_setting_and_each_reader_gets_one(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch, in_flight=3)
    subs = [s.email for s in _add(store, 60)]
    fake.set_latency(0.15)
    summary = _send(cfg, store, edition, clock)
    assert summary.sent == 60
    assert fake.max_concurrent == 3  # never more than three batches in `sending` at once
    _exactly_once(fake, subs)


def test_in_strict_mode_every_call_in_doubt_among_those_in_flight_is_cancelled_and_resent(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch, in_flight=3)
    subs = [s.email for s in _add(store, 40)]
    fake.set_latency(0.05)
    fake.drop_next(2, accept=True)  # the first two of the overlapping calls lose their answers
    summary = _send(cfg, store, edition, clock, strict=True)
    assert summary.withdrawn == 2 and len(fake.cancelled) == 2
    assert (summary.sent, summary.failed, summary.in_doubt) == (40, 0, 0)
    _exactly_once(fake, subs)


def test_strict_mode_keeps_room_for_a_cancel_per_request_in_flight(
    config: Config, store: Store, edition: Edition, fake: FakeSendGrid, clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cfg = _config(config, fake, monkeypatch, in_flight=3)
    subs = [s.email for s in _add(store, 5)]
    for i in range(8):  # eight holds of this store's: only 2 cancels left, 3 calls may fly
        until = clock.now() + timedelta(minutes=11 + i)
        store.deliveries.add_hold(f"held{i}", "other/edition", until=until, now=clock.now())
    _send(cfg, store, edition, clock, strict=True)
    assert clock.now() >= NOW + timedelta(minutes=11)  # waited until one of them lapsed
    _exactly_once(fake, subs)
