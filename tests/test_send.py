"""Sending an edition: the ledger plans once, each subscriber gets one email, and an
unsubscribe that arrives mid-send is honoured."""

from __future__ import annotations

import gc
import random
import weakref
from datetime import timedelta
from typing import Any

import pytest
from itsdangerous import URLSafeSerializer
from sending import KEY, NOW, SECRET, _add, _claim, _emls, _outbox, _send, edition, sendgrid  # noqa: F401  (fixtures)
from sqlalchemy import inspect

from digest import tokens
from digest.bulk import BULK_THRESHOLD, bulk_gc
from digest.compose import Rendered, default_renderer
from digest.config import Config
from digest.editions import Edition
from digest.errors import ConfigError
from digest.retry import RetryPolicy
from digest.store import Store
from digest.tokens import LinkSigner, read_token
from digest.transports import make_transport
from digest.transports.base import OutgoingEmail, SendResult, Transport

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


def test_a_claim_reaches_the_disk_before_its_provider_call(store: Store, edition: Edition) -> None:
    """A claim lost to a power cut would send its rows again, so its commit is synced: on
    SQLite it runs under synchronous=FULL (the store's other commits under NORMAL, in WAL
    mode); PostgreSQL syncs every commit."""
    _add(store, 3)
    store.deliveries.plan(KEY, lambda _id, _topics: ("politics|A", "A"), now=NOW)
    if store.engine.dialect.name != "sqlite":
        _claim(store, 3)
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        return
    seen: list[str] = []
    with store.engine.connect() as conn:  # the pool hands this connection to the claim
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.set_trace_callback(seen.append)
    _claim(store, 3)
    raw.set_trace_callback(None)
    assert raw.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again
    words = [" ".join(statement.split()[:2]) for statement in seen]
    update = next(i for i, w in enumerate(words) if w.startswith("UPDATE"))
    assert words.index("PRAGMA synchronous=FULL") < update < words.index("COMMIT")
    assert words.index("COMMIT") < words.index("PRAGMA synchronous=NORMAL")


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
            extra = {"e": key} if key else {}
            made = tokens.make_token(SECRET, "unsubscribe", subscriber_id, **extra)
            assert url == f"https://digest.example.com/u/{made}"  # one signer
            theirs = URLSafeSerializer(SECRET, salt="unsubscribe").loads(made)
            assert theirs == {"s": subscriber_id, **extra}  # an itsdangerous token
            payload = read_token(SECRET, "unsubscribe", url.rpartition("/")[2])
            assert payload == ({"s": subscriber_id, "e": key} if key else {"s": subscriber_id})
        url = signer.preferences_url(subscriber_id)
        made = tokens.make_token(SECRET, "preferences", subscriber_id)
        assert url == f"https://digest.example.com/p/{made}"
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
    subs = _add(store, 4)
    store.deliveries.plan(KEY, lambda _i, _t: ("politics|A", "A"), now=NOW)
    rows = store.deliveries.pending(KEY, "politics|A", 5)  # read and composed, not claimed
    assert store.deliveries.counts(KEY)["pending"] == 4
    store.subscribers.set_status(subs[1].id or 0, "unsubscribed", reason="link", now=NOW)
    assert store.subscribers.delete(subs[3].id or 0)  # gone altogether
    claimed, gone = store.deliveries.claim(
        KEY, [r.id for r in rows], batch_id=None, scheduled_at=None, now=NOW
    )
    assert claimed == {rows[0].id, rows[2].id} and gone == 2
    again, _ = store.deliveries.claim(
        KEY, [r.id for r in rows], batch_id=None, scheduled_at=None, now=NOW
    )
    assert again == set()  # rows already claimed are never claimed twice
    assert store.deliveries.counts(KEY)["suppressed"] == 2


def test_a_batch_reads_only_its_own_editions_rows_still_pending(
    store: Store, edition: Edition
) -> None:
    _add(store, 4)
    store.deliveries.plan(KEY, lambda _i, _t: ("politics|A", "A"), now=NOW)
    store.deliveries.plan("weekly/other", lambda _i, _t: ("politics|A", "A"), now=NOW)
    ours = [r["id"] for r in store.deliveries.rows(KEY)]
    theirs = [r["id"] for r in store.deliveries.rows("weekly/other")]
    _claim(store, 1)  # the first of ours is no longer pending
    rows = store.deliveries.pending_of(KEY, [*theirs, *reversed(ours)])
    assert [r.id for r in rows] == ours[1:]
    assert {r.email for r in rows} == {f"reader{i}@example.org" for i in (1, 2, 3)}


def test_claiming_and_recording_a_row_writes_no_index_entry(store: Store, edition: Edition) -> None:
    """No index of the ledger names a column a state move changes; on PostgreSQL each row
    then keeps its page (a heap-only update) from planned through claimed to sent."""
    _add(store, 60)
    store.deliveries.plan(KEY, lambda _i, _t: ("politics|A", "A"), now=NOW)
    moved = {"state", "attempts", "provider_message_id", "provider_batch_id", "last_error",
             "updated_at", "sent_at"}  # fmt: skip
    for index in inspect(store.engine).get_indexes("deliveries"):
        assert not moved & set(index["column_names"]), index
        assert not any(index.get("dialect_options", {}).values()), index  # no predicate
    postgres = store.engine.dialect.name == "postgresql"
    pages = "SELECT id, (ctid::text::point)[0] FROM deliveries ORDER BY id"
    with store.engine.connect() as conn:
        before = conn.exec_driver_sql(pages).all() if postgres else []
    rows = _claim(store, 60)
    store.deliveries.record(
        [SendResult(r.id, ok=True, message_id="<m@example.com>") for r in rows],
        batch_id=None,
        now=NOW,
    )
    assert store.deliveries.counts(KEY)["sent"] == 60
    if postgres:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql(pages).all() == before
            options = conn.exec_driver_sql(
                "SELECT reloptions FROM pg_class WHERE oid = 'deliveries'::regclass"
            ).scalar()
        assert options == ["fillfactor=45"]


def test_a_template_error_is_found_before_any_row_is_planned(
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
    assert sum(store.deliveries.counts(KEY).values()) == 0
    assert _emls(config) == []
    assert not store.editions.has_deliveries(KEY)  # so it can still be rebuilt or edited
    summary = _send(config, store, edition, _outbox(config))  # fixed: everyone, once
    assert summary.sent == 6 and len(_emls(config)) == 6


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


def test_the_keyed_mac_is_hmac_sha1() -> None:
    import hmac

    for key in (b"k" * 20, b"x" * 100, b""):
        for message in (b"", b"eyJzIjo0Mn0", b"z" * 500):
            assert tokens.KeyedMac(key).digest(message) == hmac.digest(key, message, "sha1")


def test_results_with_a_message_id_each_are_recorded_on_their_own_rows(
    store: Store, edition: Edition
) -> None:
    _add(store, 6)
    store.deliveries.plan(KEY, lambda _i, _t: ("politics|A", "A"), now=NOW)
    rows = _claim(store, 6)
    results = [SendResult(r.id, ok=True, message_id=f"<m{r.id}@example.com>") for r in rows[:4]]
    results.append(SendResult(rows[4].id, ok=False, error="smtp 550 5.1.1 No such mailbox"))
    store.deliveries.record(results, batch_id=None, now=NOW)

    got = {row["id"]: row for row in store.deliveries.rows(KEY)}
    for r in rows[:4]:
        assert got[r.id]["state"] == "sent"
        assert got[r.id]["provider_message_id"] == f"<m{r.id}@example.com>"
        assert got[r.id]["sent_at"] is not None
    assert got[rows[4].id]["state"] == "failed"
    assert got[rows[4].id]["last_error"] == "smtp 550 5.1.1 No such mailbox"
    assert got[rows[5].id]["state"] == "sending"  # not in this call's results: untouched


def test_a_late_answer_is_written_only_onto_rows_its_call_still_holds(
    store: Store, edition: Edition
) -> None:
    """A call's answer that comes after its provider batch was withdrawn (by a run that took
    the edition's lock when this run's lock connection was lost) changes nothing: not the
    rows put back to pending, not the rows claimed again under another batch."""
    _add(store, 4)
    ledger = store.deliveries
    ledger.plan(KEY, lambda _i, _t: ("politics|A", "A"), now=NOW)
    ids = [r.id for r in ledger.pending(KEY, "politics|A", 10)]
    at = NOW + timedelta(minutes=10)

    def states() -> dict[int, tuple[str, str | None]]:
        return {r["id"]: (r["state"], r["provider_batch_id"]) for r in ledger.rows(KEY)}

    ledger.claim(KEY, ids, batch_id="b-1", scheduled_at=at, now=NOW)
    assert ledger.release(KEY, "b-1", now=NOW) == 4  # withdrawn: its batch was cancelled
    late = [SendResult(i, True, "msg-1") for i in ids]
    ledger.record(late, batch_id="b-1", now=NOW)
    assert states() == {i: ("pending", None) for i in ids}
    assert store.editions.published("weekly") == []  # nothing was recorded sent

    ledger.claim(KEY, ids, batch_id="b-2", scheduled_at=at, now=NOW)
    ledger.record(late, batch_id="b-1", now=NOW)  # later still
    assert states() == {i: ("sending", "b-2") for i in ids}
    failed = [SendResult(i, False, error="HTTP 400") for i in ids]
    ledger.record(failed, batch_id="b-2", now=NOW)  # the call that holds them
    assert states() == {i: ("failed", "b-2") for i in ids}


def test_a_send_collects_garbage_rarely_and_restores_the_collector(
    config: Config, store: Store, edition: Edition
) -> None:
    """While sending, what existed before is frozen out of collections and young ones start
    every BULK_THRESHOLD allocations; cyclic garbage made meanwhile is still collected, and
    the process gets its own settings back, even when the send fails."""
    _add(store, 6)
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    seen: list[tuple[tuple[int, ...], int]] = []
    outbox = _outbox(config)

    class Watching:
        name = outbox.name

        def send(self, email: OutgoingEmail) -> list[SendResult]:
            seen.append((gc.get_threshold(), gc.get_freeze_count()))
            return outbox.send(email)

        def close(self) -> None:
            outbox.close()

    summary = _send(config, store, edition, Watching())
    assert summary.sent == 6 and seen
    assert all(t[0] == BULK_THRESHOLD and f > frozen for t, f in seen)
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen

    with pytest.raises(RuntimeError), bulk_gc():
        ref = weakref.ref(_Node())  # a cycle made inside the block is still collectable
        raise RuntimeError("a send that fails")
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
    gc.collect()
    assert ref() is None


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_subscribers_who_leave_while_a_first_send_plans_are_suppressed_not_sent(
    config: Config, store: Store, edition: Edition
) -> None:
    """A first send skips the upfront sweep of departed subscribers (every row was just
    planned from active ones); those who leave or are deleted after planning are still
    caught at their claim, and the summary counts them."""
    subs = _add(store, 6)
    ledger = store.deliveries
    plan = ledger.plan

    def plan_then_leave(*args: Any, **kwargs: Any) -> int:
        added = plan(*args, **kwargs)
        store.subscribers.set_status(subs[1].id or 0, "unsubscribed", reason="link", now=NOW)
        assert store.subscribers.delete(subs[4].id or 0)
        return added

    ledger.plan = plan_then_leave  # type: ignore[method-assign]
    summary = _send(config, store, edition, _outbox(config))
    assert (summary.sent, summary.suppressed, summary.pending) == (4, 2, 0)
    sent_to = sorted(m["To"].addresses[0].addr_spec for m in _emls(config))
    assert sent_to == sorted(s.email for i, s in enumerate(subs) if i not in (1, 4))
