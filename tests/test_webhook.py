"""The signed SendGrid Event Webhook: verified on raw bytes before parsing, idempotent."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import SECRET
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient

from digest.config import Config
from digest.store import Store
from digest.subscriber import Subscriber
from digest.web import create_app

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
PATH = "/webhooks/sendgrid"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The key as SendGrid's settings page shows it: base64 of the DER SubjectPublicKeyInfo."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def signed(key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int) -> dict[str, str]:
    """Headers exactly as SendGrid sends them: ECDSA P-256 SHA-256 over timestamp + body."""
    signature = key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
        "Content-Type": "application/json",
    }


def with_key(config: Config, public_key: str | None) -> Config:
    return config.model_copy(
        update={"web": config.web.model_copy(update={"webhook_public_key": public_key})}
    )


@pytest.fixture
def client(config: Config, store: Store, key: ec.EllipticCurvePrivateKey) -> FlaskClient:
    return create_app(
        with_key(config, public_b64(key)), store, now=NOW, secret=SECRET
    ).test_client()


@pytest.fixture
def ana(store: Store) -> Subscriber:
    return store.subscribers.add(Subscriber(email="ana@example.com", topics=("tech",)), now=NOW)


def event(kind: str, event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "email": "ana@example.com",
        "timestamp": int(NOW.timestamp()) - 60,
        "event": kind,
        "sg_event_id": event_id,
        "sg_message_id": "msg.1",
        "edition": "weekly/2026-W48",
        "variant": "A",
        **fields,
    }


def body_of(*events: dict[str, Any]) -> bytes:
    # Spacing as SendGrid sends it; the signature covers these exact bytes.
    return json.dumps(list(events), indent=1).encode() + b"\r\n"


def post(
    client: FlaskClient, key: ec.EllipticCurvePrivateKey, body: bytes, *, ts: int | None = None
):  # type: ignore[no-untyped-def]
    timestamp = int(NOW.timestamp()) if ts is None else ts
    return client.post(PATH, data=body, headers=signed(key, body, timestamp))


def test_hard_bounce_makes_the_subscriber_non_active(
    client: FlaskClient, store: Store, key: ec.EllipticCurvePrivateKey, ana: Subscriber
) -> None:
    body = body_of(
        event("delivered", "e1"), event("bounce", "e2", type="bounce", reason="550 no such user")
    )
    answer = post(client, key, body)
    assert answer.status_code == 200
    assert answer.get_json() == {"stored": 2, "duplicates": 0, "ignored": 0, "suppressed": 1}
    after = store.subscribers.get(ana.id or 0)
    assert after is not None and after.status == "bounced"
    assert store.subscribers.count(status="active") == 0


def test_replayed_batch_answers_200_and_changes_nothing(
    client: FlaskClient, store: Store, key: ec.EllipticCurvePrivateKey, ana: Subscriber
) -> None:
    body = body_of(event("open", "e1"), event("spamreport", "e2"))
    assert post(client, key, body).status_code == 200
    again = post(client, key, body)
    assert again.status_code == 200
    assert again.get_json() == {"stored": 0, "duplicates": 2, "ignored": 0, "suppressed": 0}
    assert store.events.count() == 2
    assert store.subscribers.get(ana.id or 0).status == "complained"  # type: ignore[union-attr]


def test_unknown_event_type_and_incomplete_events_are_skipped_but_the_batch_is_stored(
    client: FlaskClient, store: Store, key: ec.EllipticCurvePrivateKey, ana: Subscriber
) -> None:
    incomplete = event("open", "e3")
    del incomplete["timestamp"]
    body = body_of(event("delivered", "e1"), event("teleported", "e2"), incomplete)
    answer = post(client, key, body)
    assert answer.status_code == 200
    assert answer.get_json() == {"stored": 1, "duplicates": 0, "ignored": 2, "suppressed": 0}
    assert store.events.count() == 1 and store.events.count("delivered") == 1


@pytest.mark.parametrize(
    "case", ["tampered body", "other key", "missing signature", "garbage signature", "reserialized"]
)
def test_bad_signature_answers_403_and_stores_nothing(
    client: FlaskClient, store: Store, key: ec.EllipticCurvePrivateKey, ana: Subscriber, case: str
) -> None:
    body = body_of(event("bounce", "e1", type="bounce"))
    ts = int(NOW.timestamp())
    headers = signed(key, body, ts)
    sent = body
    if case == "tampered body":
        sent = body.replace(b"bounce", b"bounca", 1)
    elif case == "other key":
        headers = signed(ec.generate_private_key(ec.SECP256R1()), body, ts)
    elif case == "missing signature":
        del headers["X-Twilio-Email-Event-Webhook-Signature"]
    elif case == "garbage signature":
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "not base64!"
    elif case == "reserialized":
        sent = json.dumps(json.loads(body)).encode()  # same JSON, different bytes
    answer = client.post(PATH, data=sent, headers=headers)
    assert answer.status_code == 403
    assert answer.get_json()["error"].startswith("rejected:")
    assert store.events.count() == 0
    assert store.subscribers.get(ana.id or 0) == ana


@pytest.mark.parametrize("offset", [-601, 601], ids=["stale", "future"])
def test_timestamp_outside_the_window_answers_403(
    client: FlaskClient, store: Store, key: ec.EllipticCurvePrivateKey, ana: Subscriber, offset: int
) -> None:
    body = body_of(event("bounce", "e1", type="bounce"))
    answer = post(client, key, body, ts=int(NOW.timestamp()) + offset)
    assert answer.status_code == 403
    assert answer.get_json() == {"error": "rejected: timestamp outside the accepted window"}
    assert store.events.count() == 0 and store.subscribers.get(ana.id or 0) == ana


def test_timestamp_at_the_edge_of_the_window_is_accepted(
    client: FlaskClient, key: ec.EllipticCurvePrivateKey
) -> None:
    body = body_of(event("open", "e1"))
    assert post(client, key, body, ts=int(NOW.timestamp()) - 600).status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[{not json", "request body:1: not valid JSON"),
        (b'{"event": "open"}', "request body: expected a JSON array of events, got dict"),
        (b"\xff\xfe", "request body:1: not valid JSON"),
    ],
    ids=["broken", "object", "not utf-8"],
)
def test_malformed_signed_body_answers_400(
    client: FlaskClient, store: Store, key: ec.EllipticCurvePrivateKey, body: bytes, message: str
) -> None:
    answer = post(client, key, body)
    assert answer.status_code == 400
    assert answer.get_json()["error"].startswith(message)
    assert store.events.count() == 0


def test_no_public_key_configured_answers_503_with_the_setting_to_fix(
    config: Config, store: Store, key: ec.EllipticCurvePrivateKey
) -> None:
    client = create_app(with_key(config, None), store, now=NOW, secret=SECRET).test_client()
    answer = post(client, key, body_of(event("open", "e1")))
    assert answer.status_code == 503
    assert "web.webhook_public_key" in answer.get_json()["error"]
    assert store.events.count() == 0


def test_unreadable_public_key_answers_503(
    config: Config, store: Store, key: ec.EllipticCurvePrivateKey
) -> None:
    client = create_app(
        with_key(config, "bm90IGEga2V5"), store, now=NOW, secret=SECRET
    ).test_client()
    answer = post(client, key, body_of(event("open", "e1")))
    assert answer.status_code == 503
    assert "not a base64 DER public key" in answer.get_json()["error"]


def test_webhook_key_from_digest_yaml_is_used(
    project: Any, store: Store, key: ec.EllipticCurvePrivateKey
) -> None:
    import yaml  # type: ignore[import-untyped]

    from digest.config import load_config

    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["web"] = {"webhook_public_key": public_b64(key), "webhook_max_age": 30}
    path.write_text(yaml.safe_dump(data))
    client = create_app(load_config(path), store, now=NOW, secret=SECRET).test_client()
    body = body_of(event("open", "e1"))
    assert post(client, key, body, ts=int(NOW.timestamp()) - 31).status_code == 403
    assert post(client, key, body, ts=int(NOW.timestamp()) - 29).status_code == 200


# -- attribution: the event's address decides, a disagreeing custom arg is ignored ------
@pytest.mark.parametrize(
    ("fields", "bounced"),
    [
        ({}, "ana"),  # address only
        ({"subscriber_id": "{ana}"}, "ana"),  # custom arg agrees
        ({"subscriber_id": "{bo}"}, "ana"),  # custom arg names someone else: ignored
        ({"email": "ana.old@example.com", "sg_message_id": "msgA.f1"}, "ana"),  # by message id
        ({"email": "ana.old@example.com", "delivery_id": "{delivery}"}, "ana"),  # by delivery
        ({"email": "x@example.com", "subscriber_id": "{bo}", "sg_message_id": "msgA.f1"}, None),
    ],
    ids=["address", "agreeing-arg", "disagreeing-arg", "message-id", "delivery-id", "stranger"],
)
def test_webhook_suppresses_the_address_the_event_is_about(
    client: FlaskClient,
    store: Store,
    key: ec.EllipticCurvePrivateKey,
    ana: Subscriber,
    fields: dict[str, str],
    bounced: str | None,
) -> None:
    from test_events import sent_delivery

    bo = store.subscribers.add(Subscriber(email="bo@example.com", topics=("tech",)), now=NOW)
    delivery = sent_delivery(store, ana, "ana.old@example.com", "msgA")
    ids = {"{ana}": str(ana.id), "{bo}": str(bo.id), "{delivery}": str(delivery)}
    given = {k: ids.get(v, v) for k, v in fields.items()}
    answer = post(client, key, body_of(event("bounce", "b1", type="bounce", **given)))
    assert answer.status_code == 200
    statuses = {s.email.split("@")[0]: s.status for s in store.subscribers.iter_all()}
    expected = {"ana": "active", "bo": "active"}
    if bounced:
        expected[bounced] = "bounced"
    assert statuses == expected
