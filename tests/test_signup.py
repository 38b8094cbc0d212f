"""Double opt-in for every status an address can have, the consent history, the welcome mail
through the configured transport, and the security headers every page carries."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import SECRET
from editions import make_edition
from fake_smtp import FakeSmtp
from fake_smtp import smtp_server as smtp_server_fixture  # noqa: F401
from flask.testing import FlaskClient
from test_events import sent_delivery
from test_web import NOW, status_reason

from digest.config import Config
from digest.store import Store
from digest.subscribers import Subscriber
from digest.tokens import make_token
from digest.web import SECURITY_HEADERS, create_app

FORM = {"email": "ana@example.com", "name": "Ana B", "topics": ["health", "tech"]}


@pytest.fixture
def client(config: Config, store: Store) -> FlaskClient:
    return create_app(config, store, now=NOW, secret=SECRET).test_client()


def mails(project: Path, kind: str) -> list[EmailMessage]:
    folder = project / "outbox" / kind
    return [
        message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for p in sorted(folder.glob("*.eml"))
    ]


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def confirm_link(message: EmailMessage) -> str:
    found = re.search(r"https://digest\.example\.com(/confirm/\S+)", text_of(message))
    assert found is not None
    return found.group(1)


def add_ana(store: Store, status: str) -> Subscriber:
    return store.subscribers.add(
        Subscriber(
            email="ana@example.com",
            name="Ana",
            topics=("politics",),
            status=status,
            consent_at=NOW.replace(year=2025),
            consent_method="import",
            consent_source="list.csv",
        ),
        now=NOW,
    )


# -- signup: every status ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "mail"),
    [
        ("pending", "confirm"),
        ("unsubscribed", "confirm"),
        ("active", "reminder"),
        ("bounced", None),
        ("complained", None),
    ],
)
def test_signup_changes_no_stored_subscriber_and_mails_only_a_deliverable_address(
    client: FlaskClient, store: Store, project: Path, status: str, mail: str | None
) -> None:
    ana = add_ana(store, status)
    store.subscribers.set_status(ana.id or 0, status, reason="earlier reason", now=NOW)
    before = store.subscribers.get(ana.id or 0)
    answer = client.post("/subscribe", data=FORM)
    fresh = client.post("/subscribe", data={**FORM, "email": "zoe@example.com"})
    # The same page whatever the address's status: the form reveals nothing.
    assert answer.status_code == fresh.status_code == 200
    assert answer.get_data(as_text=True).replace("ana@", "X@") == fresh.get_data(
        as_text=True
    ).replace("zoe@", "X@")
    assert store.subscribers.get(ana.id or 0) == before
    assert status_reason(store, ana.id or 0) == "earlier reason"
    sent = [m for m in mails(project, "confirmations") if "ana@" in str(m["To"])]
    if mail is None:
        assert sent == []
    elif mail == "reminder":
        assert len(sent) == 1 and "already subscribed" in text_of(sent[0])
    else:
        assert len(sent) == 1 and "/confirm/" in text_of(sent[0])
    signups = [c for c in store.consents.history(ana.id or 0) if c.method == "double-opt-in"]
    assert len(signups) == (1 if mail == "confirm" else 0)


def test_signup_of_a_new_address_is_pending_with_its_consent_record(
    client: FlaskClient, store: Store, project: Path
) -> None:
    client.post("/subscribe", data=FORM, environ_base={"REMOTE_ADDR": "203.0.113.9"})
    ana = store.subscribers.get_by_email("ana@example.com")
    assert ana is not None and ana.status == "pending" and ana.topics == ("tech", "health")
    (record,) = store.consents.history(ana.id or 0)
    assert (record.ip, record.given_at, record.confirmed_at) == ("203.0.113.9", NOW, None)


def test_confirming_a_resubscription_keeps_the_old_consent_record(
    client: FlaskClient, store: Store, project: Path
) -> None:
    ana = add_ana(store, "unsubscribed")
    client.post("/subscribe", data=FORM, environ_base={"REMOTE_ADDR": "198.51.100.4"})
    (mail,) = mails(project, "confirmations")
    assert client.get(confirm_link(mail)).status_code == 200
    after = store.subscribers.get(ana.id or 0)
    assert after is not None and after.status == "active" and after.topics == ("tech", "health")
    assert (after.consent_method, after.consent_ip, after.consent_at) == (
        "double-opt-in",
        "198.51.100.4",
        NOW,
    )
    history = store.consents.history(ana.id or 0)
    assert [(c.method, c.source) for c in history] == [
        ("double-opt-in", "web form"),
        ("import", "list.csv"),  # the record the confirmation replaced, kept
    ]
    assert all(c.confirmed_at is not None for c in history)


def test_a_used_confirm_link_does_not_undo_a_later_unsubscribe(
    client: FlaskClient, store: Store, project: Path
) -> None:
    client.post("/subscribe", data=FORM)
    link = confirm_link(mails(project, "confirmations")[0])
    assert client.get(link).status_code == 200
    ana = store.subscribers.get_by_email("ana@example.com")
    assert ana is not None and ana.id is not None
    store.subscribers.set_status(ana.id, "unsubscribed", reason="one-click", now=NOW)
    again = client.get(link)
    assert again.status_code == 400 and "Sign up again" in again.get_data(as_text=True)
    assert store.subscribers.get(ana.id).status == "unsubscribed"  # type: ignore[union-attr]


@pytest.mark.parametrize("status", ["bounced", "complained"])
def test_a_confirm_link_never_reopens_a_bounced_or_complained_address(
    client: FlaskClient, store: Store, project: Path, status: str
) -> None:
    client.post("/subscribe", data=FORM)
    link = confirm_link(mails(project, "confirmations")[0])
    ana = store.subscribers.get_by_email("ana@example.com")
    assert ana is not None and ana.id is not None
    store.subscribers.set_status(ana.id, status, reason="provider", now=NOW)
    assert client.get(link).status_code == 400
    assert store.subscribers.get(ana.id).status == status  # type: ignore[union-attr]
    assert mails(project, "welcome") == []


def test_a_confirm_link_for_another_subscribers_signup_is_refused(
    client: FlaskClient, store: Store, project: Path
) -> None:
    client.post("/subscribe", data=FORM)
    bo = store.subscribers.add(Subscriber(email="bo@example.com", status="pending"), now=NOW)
    ana = store.subscribers.get_by_email("ana@example.com")
    assert ana is not None
    (signup,) = store.consents.history(ana.id or 0)
    forged = make_token(SECRET, "confirm", bo.id or 0, c=signup.id)
    assert client.get(f"/confirm/{forged}").status_code == 400
    assert store.subscribers.get(bo.id or 0).status == "pending"  # type: ignore[union-attr]


# -- welcome -------------------------------------------------------------------------------
def publish(store: Store, topics: tuple[str, ...] = ("politics", "tech", "health")) -> None:
    edition = make_edition(2, topics)
    store.editions.save(edition)
    reader = store.subscribers.add(Subscriber(email="old@example.com", topics=topics), now=NOW)
    sent_delivery(store, reader, reader.email, "m1")


def test_confirming_sends_a_welcome_with_the_latest_edition_for_the_readers_topics(
    client: FlaskClient, store: Store, project: Path
) -> None:
    publish(store)
    client.post("/subscribe", data={**FORM, "topics": ["tech"]})
    client.get(confirm_link(mails(project, "confirmations")[0]))
    client.get(confirm_link(mails(project, "confirmations")[0]))  # a second click: no 2nd mail
    (welcome,) = mails(project, "welcome")
    text = text_of(welcome)
    assert welcome["Subject"] == "Welcome to Prism Weekly" and "ana@example.com" in welcome["To"]
    assert "Open-Source Model Matches Rivals" in text  # a tech story
    assert "South Korea and Japan" not in text  # politics is not hers
    assert "https://digest.example.com/archive/weekly/2026-W48/tech/" in text
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_welcome_without_any_edition_yet_just_welcomes(
    client: FlaskClient, store: Store, project: Path
) -> None:
    client.post("/subscribe", data=FORM)
    client.get(confirm_link(mails(project, "confirmations")[0]))
    (welcome,) = mails(project, "welcome")
    assert "your subscription is confirmed" in text_of(welcome)
    assert "latest edition" not in text_of(welcome)


def test_confirmation_and_welcome_go_through_the_configured_smtp_transport(
    config: Config, store: Store, project: Path, smtp_server: FakeSmtp
) -> None:
    smtp = config.model_copy(
        update={
            "delivery": config.delivery.model_copy(
                update={"transport": "smtp", "smtp": smtp_server.settings()}
            )
        }
    )
    publish(store)
    client = create_app(smtp, store, now=NOW, secret=SECRET).test_client()
    client.post("/subscribe", data=FORM)
    (confirmation,) = smtp_server.messages
    assert confirmation.rcpt_tos == ("ana@example.com",)
    assert client.get(confirm_link(confirmation.message)).status_code == 200
    assert len(smtp_server.messages) == 2
    welcome = smtp_server.messages[1]
    assert welcome.message["Subject"] == "Welcome to Prism Weekly"
    assert b"\r\nList-Unsubscribe: <https://digest.example.com/u/" in welcome.raw.replace(
        b"\n", b"\r\n"
    ).replace(b"\r\r\n", b"\r\n")
    assert not (project / "outbox").exists()


# -- security headers ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    ["/subscribe", "/healthz", "/archive/", "/u/not-a-token", "/p/not-a-token", "/no-such-page"],
)
def test_every_page_carries_the_security_headers(client: FlaskClient, path: str) -> None:
    answer = client.get(path)
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers.get(name) == value, (path, name)
    csp = answer.headers["Content-Security-Policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "<script" not in answer.get_data(as_text=True)
