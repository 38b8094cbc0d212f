"""Provider events: parsing SendGrid payloads, suppressions, A/B counts, `digest events import`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Run

from digest.errors import InputError
from digest.events import apply_events, parse_sendgrid_events, parse_sendgrid_payload
from digest.store import Store
from digest.subscriber import Subscriber

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
TS = 1795000000


def ev(kind: str, event_id: str, email: str = "ana@example.com", **fields: Any) -> dict[str, Any]:
    return {"email": email, "timestamp": TS, "event": kind, "sg_event_id": event_id, **fields}


def payload(*events: object) -> bytes:
    return json.dumps(list(events)).encode()


def add(store: Store, email: str, status: str = "active") -> Subscriber:
    return store.subscribers.add(Subscriber(email=email, topics=("tech",), status=status), now=NOW)


def status(store: Store, subscriber: Subscriber) -> str:
    found = store.subscribers.get(subscriber.id or 0)
    assert found is not None
    return found.status


def test_parse_reads_custom_args_categories_and_time() -> None:
    (click, opened) = parse_sendgrid_events(
        payload(
            ev(
                "click",
                "c1",
                email="Ana@Example.com",
                url="https://x.test/a",
                category=["weekly", "B"],
                delivery_id="42",
                edition="weekly/2026-W48",
                variant="B",
                subscriber_id="7",
            ),
            ev("open", "o1", category="weekly", delivery_id="n/a"),
        )
    )
    assert (click.email, click.url, click.category) == (
        "ana@example.com",
        "https://x.test/a",
        ("weekly", "B"),
    )
    assert (click.delivery_id, click.edition_key, click.variant, click.subscriber_id) == (
        42,
        "weekly/2026-W48",
        "B",
        7,
    )
    assert click.occurred_at == datetime.fromtimestamp(TS, UTC) and click.occurred_at.tzinfo is UTC
    assert click.raw["sg_event_id"] == "c1"
    assert opened.category == ("weekly",) and opened.delivery_id is None


def test_parse_skips_unknown_types_and_incomplete_events_and_counts_them() -> None:
    parsed = parse_sendgrid_payload(
        payload(
            ev("open", "1"),
            ev("teleported", "2"),
            {"event": "open"},
            "text",
            ev("open", "5", timestamp="soon"),
        )
    )
    assert [e.provider_event_id for e in parsed.events] == ["1"]
    assert parsed.ignored == 4


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not valid JSON"),
        (b"[1,", "not valid JSON"),
        (b'"open"', "expected a JSON array of events, got str"),
    ],
)
def test_parse_names_the_source_and_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_sendgrid_events(body, source="events.json")
    assert caught.value.path == "events.json" and caught.value.reason.startswith(reason)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ev("bounce", "1", type="bounce", reason="550 5.1.1 unknown user"), "bounced"),
        (ev("bounce", "1", type="blocked", reason="421 try later"), "active"),
        (ev("dropped", "1", reason="Invalid"), "bounced"),
        (ev("dropped", "1", reason="Bounced Address"), "bounced"),
        (ev("dropped", "1", reason="Unsubscribed Address"), "unsubscribed"),
        (ev("dropped", "1", reason="Spam Reporting Address"), "complained"),
        (ev("dropped", "1", reason="Invalid SMTPAPI header"), "active"),
        (ev("spamreport", "1"), "complained"),
        (ev("unsubscribe", "1"), "unsubscribed"),
        (ev("group_unsubscribe", "1", asm_group_id=3), "unsubscribed"),
        (ev("group_resubscribe", "1", asm_group_id=3), "active"),
        (ev("deferred", "1"), "active"),
        (ev("delivered", "1"), "active"),
        (ev("processed", "1"), "active"),
        (ev("open", "1"), "active"),
        (ev("click", "1", url="https://x.test"), "active"),
    ],
    ids=lambda v: (
        v if isinstance(v, str) else f"{v['event']}:{v.get('type') or v.get('reason') or ''}"
    ),
)
def test_each_event_kind_moves_the_subscriber_as_documented(
    store: Store, event: dict[str, Any], expected: str
) -> None:
    ana = add(store, "ana@example.com")
    report = apply_events(store, parse_sendgrid_events(payload(event)), now=NOW)
    assert report.stored == 1 and store.events.count() == 1
    assert status(store, ana) == expected
    assert report.suppressed == (0 if expected == "active" else 1)


# -- which subscriber an event is about ----------------------------------------------
def sent_delivery(
    store: Store,
    subscriber: Subscriber,
    email: str,
    message_id: str,
    edition_key: str = "weekly/2026-W48",
) -> int:
    """A sent delivery row, as the ledger leaves it, addressed to `email`: written as a
    claim leaves it, then recorded sent by the ledger."""
    from digest.store.schema import deliveries
    from digest.transports.base import SendResult

    with store.engine.begin() as conn:
        result = conn.execute(
            deliveries.insert().values(
                edition_key=edition_key,
                subscriber_id=subscriber.id,
                email=email,
                variant="A",
                content_key="tech|A",
                state="sending",
                attempts=1,
                created_at=NOW,
                updated_at=NOW,
            )
        )
    row = int(result.inserted_primary_key[0])  # type: ignore[index]
    store.deliveries.record([SendResult(row, True, message_id)], batch_id=None, now=NOW)
    return row


def test_a_bounce_suppresses_its_address_not_the_subscriber_id_it_carried(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ana = add(store, "ana@example.com")
    bo = add(store, "bo@example.com")
    bounce = ev("bounce", "1", type="bounce", reason="550 unknown", subscriber_id=str(bo.id))
    report = apply_events(store, parse_sendgrid_events(payload(bounce)), now=NOW)
    assert report.suppressed == 1
    assert status(store, ana) == "bounced" and status(store, bo) == "active"
    assert "disagrees with the address" in caplog.text and "ignored" in caplog.text


def test_a_matching_custom_arg_is_used_without_a_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ana = add(store, "ana@example.com")
    apply_events(
        store,
        parse_sendgrid_events(payload(ev("spamreport", "1", subscriber_id=str(ana.id)))),
        now=NOW,
    )
    assert status(store, ana) == "complained" and "disagrees" not in caplog.text


def test_an_event_for_an_address_since_changed_follows_its_message_id(store: Store) -> None:
    ana = add(store, "ana.new@example.com")  # the delivery went to her old address
    sent_delivery(store, ana, "ana.old@example.com", "msgA1")
    event = ev("spamreport", "1", "ana.old@example.com", sg_message_id="msgA1.filter0001.1.0")
    apply_events(store, parse_sendgrid_events(payload(event)), now=NOW)
    assert status(store, ana) == "complained"


def test_an_event_follows_its_delivery_id_when_it_has_no_message_id(store: Store) -> None:
    ana = add(store, "ana.new@example.com")
    delivery = sent_delivery(store, ana, "ana.old@example.com", "msgA1")
    event = ev("unsubscribe", "1", "ana.old@example.com", delivery_id=str(delivery))
    apply_events(store, parse_sendgrid_events(payload(event)), now=NOW)
    assert status(store, ana) == "unsubscribed"


def test_an_event_with_a_delivery_id_finds_its_row_by_primary_key_alone(store: Store) -> None:
    """An event that carries its delivery id (every SendGrid event does: a custom arg) is
    matched by the ledger's primary key; the message id, which no index holds, is not
    searched."""
    from sqlalchemy import event as sql_event

    ana = add(store, "ana.new@example.com")
    delivery = sent_delivery(store, ana, "ana.old@example.com", "msgA1")
    event = ev("spamreport", "1", "ana.old@example.com", sg_message_id="msgA1.filter0001.1.0",
               delivery_id=str(delivery))  # fmt: skip
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    sql_event.listen(store.engine, "before_cursor_execute", seen)
    try:
        apply_events(store, parse_sendgrid_events(payload(event)), now=NOW)
    finally:
        sql_event.remove(store.engine, "before_cursor_execute", seen)
    assert status(store, ana) == "complained"
    reads = [s for s in statements if "FROM deliveries" in s]
    assert reads and all("provider_message_id" not in s for s in reads), reads


def test_a_message_id_sent_to_another_address_suppresses_nobody(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    ana = add(store, "ana@example.com")
    bo = add(store, "bo@example.com")
    delivery = sent_delivery(store, bo, "bo@example.com", "msgB1")
    # An event for an unknown address that names Bo's message, delivery and id.
    event = ev(
        "bounce",
        "1",
        "stranger@example.com",
        type="bounce",
        sg_message_id="msgB1.filter",
        delivery_id=str(delivery),
        subscriber_id=str(bo.id),
    )
    report = apply_events(store, parse_sendgrid_events(payload(event)), now=NOW)
    assert report.stored == 1 and report.suppressed == 0
    assert status(store, ana) == "active" and status(store, bo) == "active"
    assert "disagrees" in caplog.text


def test_a_later_unsubscribe_does_not_soften_a_complaint(store: Store) -> None:
    ana = add(store, "ana@example.com", status="complained")
    report = apply_events(store, parse_sendgrid_events(payload(ev("unsubscribe", "1"))), now=NOW)
    assert status(store, ana) == "complained" and report.suppressed == 0


def test_events_for_unknown_addresses_are_stored_for_analytics(store: Store) -> None:
    report = apply_events(
        store,
        parse_sendgrid_events(payload(ev("bounce", "1", email="ghost@example.com", type="bounce"))),
        now=NOW,
    )
    assert (report.stored, report.suppressed) == (1, 0)


def test_same_event_twice_in_one_payload_is_stored_once(store: Store) -> None:
    report = apply_events(
        store, parse_sendgrid_events(payload(ev("open", "1"), ev("open", "1"))), now=NOW
    )
    assert (report.stored, report.duplicates) == (1, 1) and store.events.count() == 1


def test_edition_stats_count_each_recipient_once_per_variant(store: Store) -> None:
    def for_variant(
        variant: str, email: str, kind: str, event_id: str, **extra: Any
    ) -> dict[str, Any]:
        return ev(kind, event_id, email=email, edition="weekly/2026-W48", variant=variant, **extra)

    events = [
        for_variant("A", "a1@x.test", "delivered", "1"),
        for_variant("A", "a2@x.test", "delivered", "2"),
        for_variant("A", "a1@x.test", "open", "3"),
        for_variant("A", "a1@x.test", "open", "4"),  # Apple MPP and re-opens: still one
        for_variant("A", "a1@x.test", "click", "5", url="https://x.test/1"),
        for_variant("A", "a1@x.test", "click", "6", url="https://x.test/2"),
        for_variant("B", "b1@x.test", "delivered", "7"),
        for_variant("B", "b1@x.test", "click", "8", url="https://x.test/1"),
        ev("click", "9", email="a2@x.test", edition="weekly/2026-W47", variant="A"),
        for_variant("B", "editor@x.test", "click", "10", test="true"),
    ]
    apply_events(store, parse_sendgrid_events(payload(*events)), now=NOW)
    stats = store.events.edition_stats("weekly/2026-W48")
    assert [(s.variant, s.delivered, s.opens, s.clicks) for s in stats] == [
        ("A", 2, 1, 1),
        ("B", 1, 0, 1),
    ]


# -- digest events import ----------------------------------------------------------------


def test_import_reports_counts_and_a_second_import_only_duplicates(
    run: Run, project: Path, store: Store
) -> None:
    ana = add(store, "ana@example.com")
    file = project / "export.json"
    file.write_text(
        json.dumps([ev("delivered", "1"), ev("bounce", "2", type="bounce"), ev("mystery", "3")])
    )
    first = run("events", "import", str(file))
    assert first.output.strip() == "stored 2, duplicates 0, ignored 1, suppressed 1"
    second = run("events", "import", str(file), "--json")
    assert json.loads(second.output) == {
        "stored": 0,
        "duplicates": 2,
        "ignored": 1,
        "suppressed": 0,
    }
    assert status(store, ana) == "bounced"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"event": "bounce",', "export.json:1: not valid JSON"),
        ('{"events": []}', "export.json: expected a JSON array of events, got dict"),
    ],
)
def test_import_of_a_malformed_file_exits_2_and_stores_nothing(
    run: Run, project: Path, store: Store, content: str, message: str
) -> None:
    (project / "export.json").write_text(content)
    result = run("events", "import", str(project / "export.json"), expect=2)
    assert f"error: {project / message}" in result.output
    assert store.events.count() == 0


def test_import_of_a_missing_file_names_it(run: Run, project: Path) -> None:
    result = run("events", "import", str(project / "nope.json"), expect=2)
    assert f"error: {project / 'nope.json'}: No such file or directory" in result.output
