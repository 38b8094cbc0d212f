"""Sending an edition: the ledger plans once, each subscriber gets one email, faults are retried
or reported, and an unsubscribe that arrives mid-send is honoured."""

from __future__ import annotations

import email
import email.policy
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from editions import make_edition
from fake_sendgrid import FakeSendGrid

from digest import send as sending
from digest import tokens
from digest.compose import ContentCache, Rendered, default_renderer
from digest.config import Config
from digest.editions import Edition
from digest.errors import ConfigError
from digest.retry import RetryPolicy
from digest.store import Store
from digest.store.deliveries import LedgerRow
from digest.subscribers import Subscriber
from digest.tokens import LinkSigner, read_token
from digest.transports import make_transport
from digest.transports.base import OutgoingEmail, SendResult, Transport

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SECRET = "test-secret-0123456789"
KEY = "weekly/2026-W48"
EDITION_TOPICS = ("politics", "tech", "economy")


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    """The fake SendGrid, its clock (for send_at limits) at the tests' NOW."""
    with FakeSendGrid(now=lambda: NOW) as fake:
        yield fake


@pytest.fixture
def edition(store: Store) -> Edition:
    e = make_edition(2, EDITION_TOPICS)
    store.editions.save(e)
    return e


def _add(
    store: Store,
    n: int,
    *,
    topics: tuple[str, ...] = ("politics",),
    status: str = "active",
    start: int = 0,
) -> list[Subscriber]:
    return [
        store.subscribers.add(
            Subscriber(
                email=f"reader{i}@example.org", name=f"Reader {i}", topics=topics, status=status
            ),
            now=NOW,
        )
        for i in range(start, start + n)
    ]


class Sleeps:
    """Records the waits the send loop asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _send(
    config: Config,
    store: Store,
    edition: Edition,
    transport: Transport,
    *,
    sleep: Callable[[float], None] | None = None,
    progress: sending.Progress | None = None,
    render: Any = None,
    **options: Any,
) -> sending.SendSummary:
    opts = sending.SendOptions(**{"batch_size": 5, **options})
    return sending.send_edition(
        edition,
        config=config,
        ledger=store.deliveries,
        transport=transport,
        secret=SECRET,
        now=lambda: NOW,
        options=opts,
        render=render,
        sleep=sleep or Sleeps(),
        rng=random.Random(7),
        progress=progress,
    )


def _claim(store: Store, n: int, **provider: Any) -> list[LedgerRow]:
    """Claim up to `n` pending rows as a send does right before its provider call."""
    rows = store.deliveries.pending(KEY, "politics|A", n)
    claimed, gone = store.deliveries.claim(
        KEY, [r.id for r in rows], now=NOW, **{"batch_id": None, "scheduled_at": None, **provider}
    )
    assert (len(claimed), gone) == (len(rows), 0)
    return rows


def _outbox(config: Config) -> Transport:
    return make_transport("outbox", config, edition_key=KEY, now=lambda: NOW)


def _emls(config: Config) -> list[email.message.EmailMessage]:
    folder = config.resolve(config.delivery.outbox_dir) / KEY
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(folder.rglob("*.eml"))
    ]


# -- planning ----------------------------------------------------------------


def test_planning_twice_adds_no_rows_and_keeps_states(store: Store, edition: Edition) -> None:
    _add(store, 4)
    assign = lambda _id, topics: ("politics|A", "A") if "politics" in topics else None  # noqa: E731
    assert store.deliveries.plan(KEY, assign, now=NOW) == 4
    _claim(store, 2)
    assert store.deliveries.plan(KEY, assign, now=NOW) == 0
    assert store.deliveries.counts(KEY) == {
        "pending": 2,
        "sending": 2,
        "sent": 0,
        "failed": 0,
        "suppressed": 0,
    }


def test_only_active_subscribers_with_a_shared_topic_get_a_row(
    config: Config, store: Store, edition: Edition
) -> None:
    _add(store, 3, topics=("politics", "culture"))
    _add(store, 2, topics=("culture",), start=10)  # nothing in this edition for them
    _add(store, 2, status="unsubscribed", start=20)
    _add(store, 1, status="pending", start=30)
    _add(store, 2, topics=("tech", "economy", "health"), start=40)
    summary = _send(config, store, edition, _outbox(config))
    rows = list(store.deliveries.rows(KEY))
    assert summary.planned == 5 and summary.sent == 5
    assert sorted(r["email"] for r in rows) == sorted(
        [f"reader{i}@example.org" for i in (0, 1, 2, 40, 41)]
    )
    assert {r["content_key"] for r in rows} == {"politics|A", "economy,tech|A"}


# -- through the outbox ------------------------------------------------------


def test_outbox_gets_one_message_per_subscriber_with_their_own_unsubscribe_link(
    config: Config, store: Store, edition: Edition
) -> None:
    subs = _add(store, 7, topics=("politics", "tech"))
    summary = _send(config, store, edition, _outbox(config))
    messages = _emls(config)
    assert summary.sent == 7 and len(messages) == 7
    by_address = {m["To"].addresses[0].addr_spec: m for m in messages}
    assert set(by_address) == {s.email for s in subs}
    for sub in subs:
        msg = by_address[sub.email]
        header = msg["List-Unsubscribe"]
        assert header.startswith("<https://digest.example.com/u/") and header.endswith(">")
        assert read_token(SECRET, "unsubscribe", header[header.rindex("/") + 1 : -1])["s"] == sub.id
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["List-Id"] == "<weekly.digest.example.com>"
        html = msg.get_body(("html",)).get_content()
        assert header[1:-1] in html and "-unsubscribe_url-" not in html


def test_a_second_run_sends_nothing_new(config: Config, store: Store, edition: Edition) -> None:
    _add(store, 6)
    first = _send(config, store, edition, _outbox(config))
    second = _send(config, store, edition, _outbox(config))
    assert (first.sent, first.skipped) == (6, 0)
    assert (second.sent, second.skipped, second.failed) == (0, 6, 0)
    assert len(_emls(config)) == 6


def test_content_is_rendered_once_per_distinct_topic_mix(
    config: Config, store: Store, edition: Edition
) -> None:
    _add(store, 12, topics=("politics",))
    _add(store, 12, topics=("tech", "economy"), start=100)
    real = default_renderer(config, edition)
    calls: list[tuple[str, ...]] = []

    def counting(topics: tuple[str, ...], variant: str) -> Rendered:
        calls.append(topics)
        return real(topics, variant)

    summary = _send(config, store, edition, _outbox(config), render=counting)
    assert summary.sent == 24 and summary.renders == 2
    assert sorted(calls) == [("economy", "tech"), ("politics",)]


def test_an_unsubscribe_between_batches_is_honoured(
    config: Config, store: Store, edition: Edition
) -> None:
    subs = _add(store, 12)
    leaver = subs[-1]

    def unsubscribe_after_first_batch(done: int, _total: int) -> None:
        if done == 5:
            store.subscribers.set_status(leaver.id or 0, "unsubscribed", reason="link", now=NOW)

    summary = _send(config, store, edition, _outbox(config), progress=unsubscribe_after_first_batch)
    assert (summary.sent, summary.suppressed) == (11, 1)
    assert leaver.email not in {m["To"].addresses[0].addr_spec for m in _emls(config)}


def test_links_are_the_tokens_the_web_side_reads() -> None:
    signer = LinkSigner("https://digest.example.com", SECRET)
    for subscriber_id in (1, 42, 10**9):
        for key in ("weekly/2026-W48", "", "wöchentlich/2026-W01", "a" * 80 + "/2026-W01"):
            url = signer.unsubscribe_url(subscriber_id, key)
            assert url == tokens.unsubscribe_url(
                "https://digest.example.com", SECRET, subscriber_id, key
            )
            payload = read_token(SECRET, "unsubscribe", url.rpartition("/")[2])
            assert payload == ({"s": subscriber_id, "e": key} if key else {"s": subscriber_id})
        url = signer.preferences_url(subscriber_id)
        assert url == tokens.preferences_url("https://digest.example.com", SECRET, subscriber_id)
        assert read_token(SECRET, "preferences", url.rpartition("/")[2]) == {"s": subscriber_id}
        with pytest.raises(tokens.BadToken, match="this link is not valid"):
            read_token(SECRET, "unsubscribe", url.rpartition("/")[2])  # another purpose
    tampered = signer.unsubscribe_url(42, KEY).rpartition("/")[2][:-2] + "xx"
    with pytest.raises(tokens.BadToken, match="it was changed"):
        read_token(SECRET, "unsubscribe", tampered)


class Watching:
    """The outbox, checking the ledger at every provider call: only this call's rows are
    claimed, and the rest of the audience is still pending."""

    def __init__(self, inner: Transport, store: Store, audience: int) -> None:
        self.name, self._inner, self._store, self._audience = "watching", inner, store, audience
        self.calls: list[int] = []

    def send(self, email: OutgoingEmail) -> list[SendResult]:
        counts = self._store.deliveries.counts(KEY)
        assert counts["sending"] == len(email.recipients)
        assert counts["sending"] + counts["sent"] + counts["pending"] == self._audience
        self.calls.append(len(email.recipients))
        return self._inner.send(email)

    def close(self) -> None:
        self._inner.close()


def test_only_the_batch_in_flight_is_ever_claimed(
    config: Config, store: Store, edition: Edition
) -> None:
    _add(store, 12)
    _add(store, 7, topics=("tech",), start=100)
    watching = Watching(_outbox(config), store, 19)
    summary = _send(config, store, edition, watching)
    assert summary.sent == 19 and sorted(watching.calls) == [2, 2, 5, 5, 5]
    assert store.deliveries.counts(KEY)["sending"] == 0


def test_a_subscriber_who_leaves_after_their_batch_was_composed_is_not_sent(
    config: Config, store: Store, edition: Edition
) -> None:
    subs = _add(store, 3)
    store.deliveries.plan(KEY, lambda _i, _t: ("politics|A", "A"), now=NOW)
    rows = store.deliveries.pending(KEY, "politics|A", 5)  # read and composed, not claimed
    assert store.deliveries.counts(KEY)["pending"] == 3
    store.subscribers.set_status(subs[1].id or 0, "unsubscribed", reason="link", now=NOW)
    claimed, gone = store.deliveries.claim(
        KEY, [r.id for r in rows], batch_id=None, scheduled_at=None, now=NOW
    )
    assert claimed == {rows[0].id, rows[2].id} and gone == 1
    again, _ = store.deliveries.claim(
        KEY, [r.id for r in rows], batch_id=None, scheduled_at=None, now=NOW
    )
    assert again == set()  # rows already claimed are never claimed twice
    assert store.deliveries.counts(KEY)["suppressed"] == 1


def test_a_failure_while_composing_ahead_still_records_the_batch_in_flight(
    config: Config, store: Store, edition: Edition
) -> None:
    _add(store, 3, topics=("politics",))
    _add(store, 3, topics=("tech",), start=100)
    real = default_renderer(config, edition)

    def breaks_on_tech(topics: tuple[str, ...], variant: str) -> Rendered:
        if topics == ("tech",):
            raise ValueError("template broke")
        return real(topics, variant)

    with pytest.raises(ValueError, match="template broke"):
        _send(config, store, edition, _outbox(config), render=breaks_on_tech)
    counts = store.deliveries.counts(KEY)
    assert (counts["sent"], counts["sending"], counts["pending"]) == (3, 0, 3)


def test_planning_puts_the_rows_of_one_content_together(store: Store, edition: Edition) -> None:
    for i in range(20):
        _add(store, 1, topics=("politics",) if i % 2 else ("tech",), start=i)
    assign = lambda _id, topics: (f"{topics[0]}|A", "A")  # noqa: E731
    assert store.deliveries.plan(KEY, assign, now=NOW) == 20
    ids = [r.id for r in store.deliveries.pending(KEY, "tech|A", 100)]
    assert ids == list(range(ids[0], ids[0] + 10))


def test_unknown_transport_names_the_valid_ones(config: Config) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown transport 'pigeon' \(valid: outbox, smtp, sendgrid\)"
    ):
        make_transport("pigeon", config, edition_key=KEY, now=lambda: NOW)


def test_backoff_waits_at_least_what_the_provider_asked_and_stops_at_the_budget() -> None:
    policy = RetryPolicy(max_attempts=4, max_wait=10.0)
    rng = random.Random(1)
    assert all(0 <= policy.delay(3, None, rng) <= 4 for _ in range(50))
    assert policy.delay(1, 7.5, rng) >= 7.5
    assert policy.next_wait(4, 0.0, None, rng) is None  # tries spent
    assert policy.next_wait(1, 9.0, 5.0, rng) is None  # wait budget spent


# -- through SendGrid (the fake server) ---------------------------------------


def _sendgrid_config(
    config: Config, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch, **delivery: Any
) -> Config:
    monkeypatch.setenv("SENDGRID_API_KEY", fake.api_key)
    sg = config.delivery.sendgrid.model_copy(update={"host": fake.url, "timeout": 5.0})
    return config.model_copy(
        update={"delivery": config.delivery.model_copy(update={"sendgrid": sg, **delivery})}
    )


def _sendgrid(config: Config) -> Transport:
    return make_transport("sendgrid", config, edition_key=KEY, now=lambda: NOW)


def test_a_rate_limit_is_waited_out_then_the_batch_is_sent(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _sendgrid_config(config, sendgrid, monkeypatch)
    subs = _add(store, 5)
    reset = int(NOW.timestamp()) + 12  # SendGrid says when the window resets, as epoch seconds
    sendgrid.fail_next(429, 1, headers={"X-RateLimit-Reset": str(reset)})
    sleeps = Sleeps()
    summary = _send(cfg, store, edition, _sendgrid(cfg), sleep=sleeps)
    assert summary.sent == 5 and summary.failed == 0
    assert len(sleeps.waits) == 1 and sleeps.waits[0] >= 12
    assert sorted(sendgrid.delivered()) == sorted(s.email for s in subs)
    assert {r["attempts"] for r in store.deliveries.rows(KEY)} == {2}


def test_server_errors_beyond_max_attempts_fail_the_batch_with_the_reason(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _sendgrid_config(config, sendgrid, monkeypatch)
    _add(store, 3)
    attempts = cfg.delivery.max_attempts
    sendgrid.fail_next(500, attempts)
    sleeps = Sleeps()
    summary = _send(cfg, store, edition, _sendgrid(cfg), sleep=sleeps)
    assert (summary.sent, summary.failed) == (0, 3)
    assert len(sleeps.waits) == attempts - 1
    ((reason, count),) = summary.failures
    assert count == 3 and "500" in reason and f"gave up after {attempts} attempts" in reason
    assert sendgrid.delivered() == []


def test_a_rejected_batch_fails_with_the_provider_message_and_the_run_goes_on(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _sendgrid_config(config, sendgrid, monkeypatch)
    _add(store, 12)
    sendgrid.fail_next(400, 1)
    summary = _send(cfg, store, edition, _sendgrid(cfg))
    assert (summary.sent, summary.failed) == (7, 5)
    assert len(sendgrid.delivered()) == 7
    ((reason, _),) = summary.failures
    assert "400" in reason
    failed = list(store.deliveries.rows(KEY, state="failed"))
    assert [r["id"] for r in failed] == sorted(r["id"] for r in failed)[:5]


def test_retry_failed_sends_only_the_failed_rows(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _sendgrid_config(config, sendgrid, monkeypatch)
    subs = _add(store, 12)
    sendgrid.fail_next(400, 1)
    _send(cfg, store, edition, _sendgrid(cfg))
    again = _send(cfg, store, edition, _sendgrid(cfg), retry_failed=True)
    assert (again.sent, again.skipped, again.failed) == (5, 7, 0)
    assert sorted(sendgrid.delivered()) == sorted(s.email for s in subs)


def test_strict_mode_gives_each_batch_its_own_provider_batch_and_a_send_time(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _sendgrid_config(config, sendgrid, monkeypatch)
    _add(store, 12)
    summary = _send(cfg, store, edition, _sendgrid(cfg), strict=True)
    bodies = [r for r in _mail_sends(sendgrid)]
    assert summary.sent == 12 and len(bodies) == 3
    assert len({b["batch_id"] for b in bodies}) == 3
    assert {b["send_at"] for b in bodies} == {int((NOW + timedelta(minutes=11)).timestamp())}
    assert {r["provider_batch_id"] for r in store.deliveries.rows(KEY)} == {
        b["batch_id"] for b in bodies
    }


def test_a_batch_left_in_doubt_is_cancelled_and_resent_in_strict_mode(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _sendgrid_config(config, sendgrid, monkeypatch)
    subs = _add(store, 4)
    transport = _sendgrid(cfg)
    # A crashed run: the batch was claimed and accepted, but its result never recorded.
    store.deliveries.plan(KEY, lambda _id, _topics: ("politics|A", "A"), now=NOW)
    batch = transport.create_batch()  # type: ignore[attr-defined]
    rows = _claim(store, 5, batch_id=batch, scheduled_at=NOW + timedelta(minutes=11))
    content = ContentCache(default_renderer(cfg, edition)).get("politics|A")
    from digest import compose

    recipients = [
        compose.recipient(r, links=LinkSigner(cfg.site.base_url, SECRET), edition=edition)
        for r in rows
    ]
    transport.send(
        compose.compose(
            content,
            recipients,
            config=cfg,
            edition=edition,
            batch_id=batch,
            send_at=NOW + timedelta(minutes=11),
        )
    )
    summary = _send(cfg, store, edition, transport, strict=True)
    assert summary.sent == 4 and summary.failed == 0
    assert batch in sendgrid.cancelled
    assert sorted(sendgrid.delivered()) == sorted(s.email for s in subs)


def test_without_strict_mode_a_batch_in_doubt_is_failed_not_resent(
    config: Config, store: Store, edition: Edition
) -> None:
    _add(store, 8)
    store.deliveries.plan(KEY, lambda _i, t: ("politics|A", "A"), now=NOW)
    _claim(store, 5)
    summary = _send(config, store, edition, _outbox(config))
    assert (summary.sent, summary.failed) == (3, 5)
    assert summary.failures == ((sending.IN_DOUBT, 5),)
    assert len(_emls(config)) == 3


def test_a_test_send_reaches_only_the_given_address_and_touches_no_row(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _sendgrid_config(config, sendgrid, monkeypatch)
    (ana,) = _add(store, 1, topics=("tech",))
    results = sending.test_send(
        edition, ana, ["editor@example.com"], config=cfg, transport=_sendgrid(cfg), secret=SECRET
    )
    assert [r.ok for r in results] == [True]
    assert sendgrid.delivered() == ["editor@example.com"]
    (body,) = _mail_sends(sendgrid)
    assert body["subject"].startswith("[TEST] ")
    args = {**body.get("custom_args", {}), **body["personalizations"][0].get("custom_args", {})}
    assert args["test"] == "true" and args["delivery_id"] == "0"
    assert list(store.deliveries.rows(KEY)) == []


def _mail_sends(fake: FakeSendGrid) -> list[dict[str, Any]]:
    return list(fake.requests)


# -- the command ---------------------------------------------------------------


def _point_at(project: Path, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", fake.api_key)
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["delivery"]["sendgrid"]["host"] = fake.url
    data["delivery"]["batch_size"] = 5
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


def test_send_command_reports_failures_by_reason_and_exits_3(
    run: Any,
    project: Path,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _point_at(project, sendgrid, monkeypatch)
    _add(store, 12)
    sendgrid.fail_next(400, 1)
    result = run("send", "weekly", "--week", "2026-W48", "--transport", "sendgrid", expect=3)
    lines = result.stdout.splitlines()
    assert lines[0] == "sent 7, skipped 0, suppressed 0, failed 5"
    assert lines[1].startswith("  5 failed: ") and "400" in lines[1]
    again = run(
        "send",
        "weekly",
        "--week",
        "2026-W48",
        "--transport",
        "sendgrid",
        "--retry-failed",
        "--json",
    )
    assert '"sent": 5' in again.stdout and '"skipped": 7' in again.stdout


def test_send_command_needs_a_built_edition(run: Any, store: Store) -> None:
    result = run("send", "weekly", "--week", "2026-W47", expect=2)
    assert "error: no edition weekly/2026-W47" in result.output
    assert "hint: digest build weekly --week 2026-W47" in result.output


def test_cancel_withdraws_scheduled_batches_and_makes_rows_pending(
    run: Any,
    project: Path,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _point_at(project, sendgrid, monkeypatch)
    _add(store, 7)
    now = "2026-11-30T08:00:00+00:00"
    run(
        "--now",
        now,
        "send",
        "weekly",
        "--week",
        "2026-W48",
        "--transport",
        "sendgrid",
        "--send-at",
        "2026-11-30T20:00:00Z",
    )
    result = run("--now", now, "cancel", "weekly", "--week", "2026-W48")
    assert result.stdout.strip() == "cancelled 1 batch, 7 deliveries back to pending"
    assert sendgrid.delivered() == []
    assert store.deliveries.counts(KEY)["pending"] == 7
