"""The SendGrid transport, through the official client, against a fake that checks every body."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sendgrid  # type: ignore[import-untyped]
from fake_sendgrid import FakeSendGrid, Refused, check_schema, rate_limit_headers, validators
from fake_sendgrid import fake_sendgrid as fake_sendgrid_fixture  # noqa: F401
from python_http_client.exceptions import HTTPError  # type: ignore[import-untyped]

from digest.config import Config, SendGridSettings
from digest.errors import ConfigError, TransportError
from digest.transports.base import OutgoingEmail, Recipient, SendResult
from digest.transports.sendgrid import SendGridTransport, build_body, make_sendgrid

NOW = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
TIMEOUT = 0.5


def clock() -> datetime:
    return NOW


def recipient(i: int) -> Recipient:
    url = f"https://news.example.com/u/token{i}"
    return Recipient(
        delivery_id=100 + i,
        email=f"reader{i}@example.com",
        name=f"Reader {i}",
        substitutions={"-unsubscribe_url-": url, "-first_name-": f"Reader{i}"},
        headers={
            "List-Unsubscribe": f"<{url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        custom_args={
            "delivery_id": str(100 + i),
            "edition": "weekly/2026-W05",
            "variant": "a",
            "subscriber_id": str(i),
        },
    )


def email(n: int = 3, **changes: object) -> OutgoingEmail:
    base = OutgoingEmail(
        subject="Weekly digest for -first_name-",
        html="<p>Hi -first_name-</p><a href='-unsubscribe_url-'>Unsubscribe</a>",
        text="Hi -first_name-\nUnsubscribe: -unsubscribe_url-",
        from_email="news@example.com",
        from_name="Example News",
        reply_to="editors@example.com",
        recipients=tuple(recipient(i) for i in range(n)),
        headers={"List-Id": "Weekly <weekly.news.example.com>"},
        categories=("weekly", "variant-a"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def transport(fake: FakeSendGrid, key: str | None = None, **settings: object) -> SendGridTransport:
    values: dict[str, object] = {"host": fake.url, "timeout": TIMEOUT, **settings}
    config = SendGridSettings.model_validate(values)
    return SendGridTransport(key or fake.api_key, config, now=clock)


def assert_all(results: list[SendResult], n: int, **expected: object) -> None:
    assert [r.delivery_id for r in results] == [100 + i for i in range(n)]
    for r in results:
        for name, value in expected.items():
            assert getattr(r, name) == value, (name, r)


def test_valid_send_is_accepted_with_one_personalization_per_recipient_in_order(
    fake_sendgrid: FakeSendGrid,
) -> None:
    results = transport(fake_sendgrid, categories=["digest", "weekly"]).send(email(3))

    assert_all(results, 3, ok=True, error=None)
    assert results[0].message_id and len({r.message_id for r in results}) == 1
    [body] = fake_sendgrid.requests
    assert fake_sendgrid.delivered() == [f"reader{i}@example.com" for i in range(3)]
    first = body["personalizations"][0]
    assert first["to"] == [{"email": "reader0@example.com", "name": "Reader 0"}]
    assert first["substitutions"] == {
        "-unsubscribe_url-": "https://news.example.com/u/token0",
        "-first_name-": "Reader0",
    }
    assert first["headers"] == {
        "List-Unsubscribe": "<https://news.example.com/u/token0>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    args = {
        "delivery_id": "100",
        "edition": "weekly/2026-W05",
        "variant": "a",
        "subscriber_id": "0",
    }
    assert first["custom_args"] == args
    assert body["from"] == {"email": "news@example.com", "name": "Example News"}
    assert body["reply_to"] == {"email": "editors@example.com"}
    assert body["subject"] == "Weekly digest for -first_name-"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["headers"] == {"List-Id": "Weekly <weekly.news.example.com>"}
    assert body["categories"] == ["weekly", "variant-a", "digest"]
    assert "send_at" not in body and "batch_id" not in body and "mail_settings" not in body


def test_the_body_goes_out_as_utf8_json_with_names_and_subject_unescaped(
    fake_sendgrid: FakeSendGrid,
) -> None:
    """The bytes on the wire, not their parse: one JSON document in UTF-8 under an
    application/json Content-Type, a non-ASCII name and subject written as their UTF-8
    bytes, and the one-click header exactly as the recipient carries it."""
    zoe = recipient(0)._replace(name="Zoë Ünal — Ökonomie")
    message = email(1, recipients=(zoe,), subject="Ihr Überblick – Woche 5")
    [result] = transport(fake_sendgrid).send(message)
    assert result.ok
    [(content_type, raw)] = fake_sendgrid.raw
    assert content_type == "application/json"
    assert "Zoë Ünal — Ökonomie".encode() in raw and "Ihr Überblick – Woche 5".encode() in raw
    assert b"\\u" not in raw  # nothing escaped: the name is the UTF-8 bytes themselves
    assert b'"List-Unsubscribe":"<https://news.example.com/u/token0>"' in raw
    assert b'"List-Unsubscribe-Post":"List-Unsubscribe=One-Click"' in raw
    assert json.loads(raw.decode("utf-8")) == fake_sendgrid.requests[0]


def test_categories_are_capped_at_ten(fake_sendgrid: FakeSendGrid) -> None:
    many = tuple(f"c{i}" for i in range(12))
    transport(fake_sendgrid).send(email(1, categories=many))
    assert fake_sendgrid.requests[0]["categories"] == list(many[:10])


def post_raw(fake: FakeSendGrid, change: dict[str, object]) -> tuple[int, dict[str, str]]:
    """Post a minimal body, changed, with the bare client; the status and SendGrid's error."""
    client = sendgrid.SendGridAPIClient(fake.api_key, host=fake.url)
    body = {
        "from": {"email": "news@example.com"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "x"}],
        "personalizations": [{"to": [{"email": "a@example.com"}]}],
        **change,
    }
    with pytest.raises(HTTPError) as info:
        client.client.mail.send.post(request_body=body, timeout=TIMEOUT)
    [error] = json.loads(info.value.body)["errors"]
    return info.value.status_code, error


PLAIN_AFTER_HTML = [{"type": "text/html", "value": "<p>"}, {"type": "text/plain", "value": "x"}]
IN_73_HOURS = int((datetime.now(UTC) + timedelta(hours=73)).timestamp())


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            {"personalizations": [{"to": [{"email": "x"}]}]},
            "personalizations.0.to.0.email",
            "must be email",
        ),
        ({"custom_args": "delivery=1"}, "custom_args", "must be object"),
        ({"personalizations": []}, "personalizations", "must contain at least 1"),
        ({"content": PLAIN_AFTER_HTML}, "content", "text/plain must come first"),
        ({"headers": {"Subject": "spoof"}}, "headers", "reserved"),
        ({"send_at": IN_73_HOURS}, "send_at", "72 hours"),
        ({"batch_id": "neverCreated"}, "batch_id", "invalid batch id"),
    ],
)
def test_server_rejects_bodies_the_schema_or_the_live_api_refuse(
    fake_sendgrid: FakeSendGrid, change: dict[str, object], field: str, words: str
) -> None:
    status, error = post_raw(fake_sendgrid, change)
    assert (status, error["field"], error["help"]) == (400, field, None)
    assert words in error["message"]
    assert fake_sendgrid.requests == []


def test_more_than_1000_recipients_are_refused_and_1000_go_in_one_request(
    fake_sendgrid: FakeSendGrid,
) -> None:
    t = transport(fake_sendgrid)
    with pytest.raises(ValueError, match="1001 recipients in one SendGrid request; at most 1000"):
        t.send(email(1001))
    assert fake_sendgrid.answers == []
    assert all(r.ok for r in t.send(email(1000))) and len(fake_sendgrid.requests) == 1
    assert fake_sendgrid.delivered()[-1] == "reader999@example.com"


def test_rate_limit_is_retryable_after_the_reset_time(fake_sendgrid: FakeSendGrid) -> None:
    reset = NOW.timestamp() + 42
    fake_sendgrid.fail_next(429, headers=rate_limit_headers(reset), message="too many requests")
    results = transport(fake_sendgrid).send(email(2))
    error = "sendgrid HTTP 429: too many requests"
    assert_all(results, 2, ok=False, retryable=True, retry_after=42.0, error=error)


def test_rate_limit_reset_in_the_past_waits_zero_and_missing_reset_says_nothing(
    fake_sendgrid: FakeSendGrid,
) -> None:
    fake_sendgrid.fail_next(429, headers=rate_limit_headers(NOW.timestamp() - 5))
    fake_sendgrid.fail_next(429)
    t = transport(fake_sendgrid)
    assert t.send(email(1))[0].retry_after == 0.0
    late = t.send(email(1))[0]
    assert (late.retryable, late.retry_after) == (True, None)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retryable(fake_sendgrid: FakeSendGrid, status: int) -> None:
    fake_sendgrid.fail_next(status, message="internal server error")
    results = transport(fake_sendgrid).send(email(2))
    assert_all(
        results, 2, ok=False, retryable=True, error=f"sendgrid HTTP {status}: internal server error"
    )
    assert fake_sendgrid.delivered() == []


def test_an_answer_slower_than_the_timeout_leaves_the_call_in_doubt(
    fake_sendgrid: FakeSendGrid,
) -> None:
    fake_sendgrid.slow_next(TIMEOUT + 0.5)
    start = time.monotonic()
    results = transport(fake_sendgrid).send(email(2))
    assert time.monotonic() - start < TIMEOUT + 0.4
    assert_all(
        results,
        2,
        ok=False,
        retryable=False,
        in_doubt=True,
        error="sendgrid: no answer within 0.5 s (timed out)",
    )
    # The provider took the request even though its answer never came: the batch is in doubt.
    assert fake_sendgrid.delivered() == ["reader0@example.com", "reader1@example.com"]


def test_a_connection_dropped_before_the_answer_leaves_the_call_in_doubt(
    fake_sendgrid: FakeSendGrid,
) -> None:
    fake_sendgrid.drop_next()  # the request went out whole: the client cannot know more
    results = transport(fake_sendgrid).send(email(2))
    assert_all(
        results,
        2,
        ok=False,
        retryable=False,
        in_doubt=True,
        error="sendgrid: connection closed without an answer",
    )
    assert fake_sendgrid.answers == [("/v3/mail/send", 0)] and fake_sendgrid.delivered() == []


def test_a_closed_port_is_retryable_because_nothing_was_sent() -> None:
    with FakeSendGrid() as fake:
        t = transport(fake)
    [result] = t.send(email(1))
    assert result.retryable and not result.ok and not result.in_doubt
    assert result.error and result.error.startswith("sendgrid: ")


def test_a_body_the_provider_refuses_is_a_permanent_failure_with_its_message(
    fake_sendgrid: FakeSendGrid,
) -> None:
    results = transport(fake_sendgrid).send(email(2, from_email="not an address"))
    assert_all(
        results,
        2,
        ok=False,
        retryable=False,
        message_id=None,
        error="sendgrid HTTP 400: from.email must be email (from.email)",
    )


@pytest.mark.parametrize(
    ("status", "message"),
    [(403, "access forbidden"), (413, "content too large"), (404, "not found")],
)
def test_other_client_errors_are_permanent_with_the_providers_message(
    fake_sendgrid: FakeSendGrid, status: int, message: str
) -> None:
    fake_sendgrid.fail_next(status, message=message)
    results = transport(fake_sendgrid).send(email(2))
    assert_all(
        results,
        2,
        ok=False,
        retryable=False,
        message_id=None,
        error=f"sendgrid HTTP {status}: {message}",
    )


def test_a_wrong_key_is_permanent_and_never_appears_in_errors(fake_sendgrid: FakeSendGrid) -> None:
    secret_key = "SG.wrong-key-that-must-stay-secret"
    t = transport(fake_sendgrid, key=secret_key)
    results = t.send(email(2))
    refused = "sendgrid HTTP 401: The provided authorization grant is invalid, expired, or revoked"
    assert_all(results, 2, ok=False, retryable=False, error=refused)
    with pytest.raises(TransportError) as info:
        t.create_batch()
    assert info.value.retryable is False and "HTTP 401" in str(info.value)
    fake_sendgrid.drop_next()
    dropped = t.send(email(1))
    texts = [repr(r) for r in [*results, *dropped]] + [str(info.value), repr(info.value), repr(t)]
    assert all(secret_key not in text and "wrong-key" not in text for text in texts)


def test_a_scheduled_send_carries_send_at_and_batch_id(fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.now = clock
    t = transport(fake_sendgrid)
    batch = t.create_batch()
    send_at = NOW + timedelta(minutes=11)
    assert all(r.ok for r in t.send(email(2, send_at=send_at, batch_id=batch)))
    body = fake_sendgrid.requests[0]
    assert (body["send_at"], body["batch_id"]) == (int(send_at.timestamp()), batch)


def test_send_at_beyond_72_hours_is_refused_before_any_request(fake_sendgrid: FakeSendGrid) -> None:
    with pytest.raises(ValueError, match="more than 72 hours after 2026-02-02T09:00:00"):
        transport(fake_sendgrid).send(email(1, send_at=NOW + timedelta(hours=72, seconds=1)))
    assert fake_sendgrid.answers == []


def test_cancelling_a_batch_withholds_its_recipients_only(fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.now = clock
    t = transport(fake_sendgrid)
    kept, withheld = t.create_batch(), t.create_batch()
    later = NOW + timedelta(minutes=11)
    t.send(email(1, send_at=later, batch_id=kept))
    t.send(email(2, send_at=later, batch_id=withheld))
    assert len(fake_sendgrid.delivered()) == 3

    t.cancel_batch(withheld)

    assert set(fake_sendgrid.cancelled) == {withheld}
    assert fake_sendgrid.delivered() == ["reader0@example.com"]


def test_cancelling_an_unknown_batch_raises_a_permanent_error(fake_sendgrid: FakeSendGrid) -> None:
    with pytest.raises(
        TransportError, match="cancel batch nope: HTTP 400: invalid batch id \\(batch_id\\)"
    ) as info:
        transport(fake_sendgrid).cancel_batch("nope")
    assert info.value.retryable is False


def test_batch_errors_from_the_server_are_retryable(fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.fail_next(500, path="/v3/mail/batch", message="internal server error")
    with pytest.raises(
        TransportError, match="create a batch: HTTP 500: internal server error"
    ) as info:
        transport(fake_sendgrid).create_batch()
    assert info.value.retryable is True


def test_sandbox_mode_is_set_in_mail_settings(fake_sendgrid: FakeSendGrid) -> None:
    transport(fake_sendgrid, sandbox=True).send(email(1))
    assert fake_sendgrid.requests[0]["mail_settings"] == {"sandbox_mode": {"enable": True}}


def test_the_client_times_out_even_without_a_per_call_timeout(fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.slow_next(TIMEOUT + 0.5, path="/v3/mail/batch")
    with pytest.raises(TransportError, match="create a batch: no answer within 0.5 s") as info:
        transport(fake_sendgrid).create_batch()
    assert info.value.retryable is True


def test_make_sendgrid_reads_the_key_from_the_named_variable(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    variable = config.delivery.sendgrid.api_key_env
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError) as info:
        make_sendgrid(config, now=clock)
    assert (
        str(info.value)
        == f"{variable}: not set: the SendGrid API key comes from this environment variable"
    )
    assert info.value.hint and "delivery.sendgrid.api_key_env" in info.value.hint

    monkeypatch.setenv(variable, "SG.from-env")
    assert make_sendgrid(config, now=clock).name == "sendgrid"


def test_the_fake_validates_against_schemas_kept_in_the_repository() -> None:
    import fake_sendgrid as module
    import jsonschema

    root = Path(module.__file__).resolve().parent
    assert module.SCHEMAS.is_relative_to(root)
    for name in ("mail_send.json", "scheduled_send.json"):
        jsonschema.Draft7Validator.check_schema(module.load_schema(name))
    body = build_body(email(2), SendGridSettings.model_validate({}), NOW)
    check_schema(validators()[0], body)
    with pytest.raises(Refused) as info:
        check_schema(validators()[0], {**body, "personalizations": []})
    assert info.value.status == 400 and info.value.field == "personalizations"


def test_concurrent_senders_are_all_recorded(fake_sendgrid: FakeSendGrid) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(
            pool.map(lambda _: transport(fake_sendgrid, timeout=5).send(email(50)), range(16))
        )
    assert [r.error for results in outcomes for r in results if not r.ok] == []
    assert len(fake_sendgrid.delivered()) == 800 and len(fake_sendgrid.requests) == 16


def test_debug_logging_of_the_client_never_shows_the_key(
    fake_sendgrid: FakeSendGrid, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        sender = transport(fake_sendgrid)
        sender.send(email(1))
        sender.cancel_batch(sender.create_batch())  # these two go through the client
    assert caplog.records and fake_sendgrid.api_key not in caplog.text
