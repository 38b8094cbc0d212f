"""The subscriber pages: one-click unsubscribe, preference center, double opt-in, health."""

from __future__ import annotations

import html
import re
import select
import time
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from conftest import SECRET
from flask import Flask
from flask.testing import FlaskClient
from serving import stop

from digest.config import Config
from digest.store import Store
from digest.subscriber import Subscriber
from digest.tokens import make_token
from digest.web import create_app
from digest.web.context import form_signature

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


@pytest.fixture
def app(config: Config, store: Store) -> Flask:
    return create_app(config, store, now=NOW, secret=SECRET)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def ana(store: Store) -> Subscriber:
    return store.subscribers.add(
        Subscriber(email="ana@example.com", name="Ana", topics=("politics", "tech", "climate")),
        now=NOW,
    )


def token(purpose: str, subscriber: Subscriber, **extra: str) -> str:
    assert subscriber.id is not None
    return make_token(SECRET, purpose, subscriber.id, **extra)


def status_reason(store: Store, subscriber_id: int) -> str:
    from sqlalchemy import select

    from digest.store.schema import subscribers

    with store.engine.connect() as conn:
        return str(
            conn.execute(
                select(subscribers.c.status_reason).where(subscribers.c.id == subscriber_id)
            ).scalar_one()
        )


# -- unsubscribe ----------------------------------------------------------------------


def test_unsubscribe_page_names_the_address_and_digest_and_changes_nothing(
    client: FlaskClient, store: Store, ana: Subscriber
) -> None:
    answer = client.get(f"/u/{token('unsubscribe', ana, e='weekly/2026-W48')}")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert "ana@example.com" in page and "The Week in Review" in page and "Prism Weekly" in page
    assert 'method="post"' in page and "Remove Technology" in page
    assert "12 Harbour Street" in page  # postal address in the footer
    assert store.subscribers.get(ana.id or 0) == ana


@pytest.mark.parametrize("multipart", [False, True], ids=["urlencoded", "multipart"])
def test_one_click_post_unsubscribes_without_cookie_or_redirect(
    client: FlaskClient, store: Store, ana: Subscriber, multipart: bool
) -> None:
    answer = client.post(
        f"/u/{token('unsubscribe', ana)}",
        data={"List-Unsubscribe": "One-Click"},
        content_type="multipart/form-data" if multipart else "application/x-www-form-urlencoded",
    )
    assert answer.status_code == 200
    assert "Set-Cookie" not in answer.headers and "Location" not in answer.headers
    assert "You are unsubscribed" in answer.get_data(as_text=True)
    assert store.subscribers.get(ana.id or 0).status == "unsubscribed"  # type: ignore[union-attr]
    assert status_reason(store, ana.id or 0) == "one-click"


def test_one_click_post_is_idempotent_and_keeps_the_first_reason(
    client: FlaskClient, store: Store, ana: Subscriber
) -> None:
    url = f"/u/{token('unsubscribe', ana)}"
    assert client.post(url, data={"via": "page"}).status_code == 200
    again = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert store.subscribers.get(ana.id or 0).status == "unsubscribed"  # type: ignore[union-attr]
    assert status_reason(store, ana.id or 0) == "unsubscribe page"


def test_one_click_post_is_one_short_write(
    client: FlaskClient, store: Store, ana: Subscriber
) -> None:
    from sqlalchemy import event

    statements: list[str] = []
    commits: list[bool] = []
    # PostgreSQL's SET LOCAL lock_timeout aside: one UPDATE, one SELECT, one commit
    event.listen(
        store.engine,
        "before_cursor_execute",
        lambda *a: None if a[2].startswith("SET") else statements.append(a[2]),
    )
    event.listen(store.engine, "commit", lambda _conn: commits.append(True))

    answer = client.post(f"/u/{token('unsubscribe', ana)}", data={"List-Unsubscribe": "One-Click"})

    assert answer.status_code == 200 and "ana@example.com" in answer.get_data(as_text=True)
    assert [s.split()[0] for s in statements] == ["UPDATE", "SELECT"] and len(commits) == 1
    statements.clear()
    again = client.post(f"/u/{token('unsubscribe', ana)}", data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200 and [s.split()[0] for s in statements] == ["UPDATE", "SELECT"]
    assert len(commits) == 2


def test_one_click_post_for_an_unknown_subscriber_is_a_bad_link(
    client: FlaskClient, store: Store
) -> None:
    answer = client.post(f"/u/{make_token(SECRET, 'unsubscribe', 999_999)}", data={})
    assert answer.status_code == 400
    assert "This link does not work" in answer.get_data(as_text=True)


def test_one_click_post_waits_out_another_writer(
    client: FlaskClient, store: Store, ana: Subscriber
) -> None:
    """Another command holds the write lock (SQLite: the whole file; PostgreSQL: the row);
    the POST waits for it, then unsubscribes."""
    import threading

    from sqlalchemy import text

    holding = threading.Event()

    def hold() -> None:
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE subscribers SET name = name WHERE id = :i"), {"i": ana.id})
            holding.set()
            time.sleep(0.5)

    writer = threading.Thread(target=hold)
    writer.start()
    try:
        assert holding.wait(10)
        answer = client.post(
            f"/u/{token('unsubscribe', ana)}", data={"List-Unsubscribe": "One-Click"}
        )
    finally:
        writer.join(10)
    assert answer.status_code == 200
    assert store.subscribers.get(ana.id or 0).status == "unsubscribed"  # type: ignore[union-attr]


def test_serve_runs_the_configured_number_of_threads(project: Path) -> None:
    """waitress starts its worker threads at once: `web.threads`, or `--threads` over it."""
    import os
    import subprocess
    import sys

    import psutil

    config = project / "digest.yaml"
    config.write_text(config.read_text() + "\nweb:\n  threads: 3\n")

    def threads(*extra: str) -> tuple[int, str]:
        command = ["--config", str(config), "serve", "--port", "0", *extra]
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", *command],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "DIGEST_SECRET": SECRET},
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            line = proc.stdout.readline() if ready else ""
            assert "serving Prism Weekly on http://127.0.0.1:" in line, line
            return psutil.Process(proc.pid).num_threads(), line
        finally:
            stop(proc)

    configured, line = threads()
    assert "(3 threads)" in line
    overridden, line = threads("--threads", "7")
    assert "(7 threads)" in line
    assert overridden - configured == 4


def test_topic_only_unsubscribe_keeps_the_other_topics(
    client: FlaskClient, store: Store, ana: Subscriber
) -> None:
    answer = client.post(f"/u/{token('unsubscribe', ana)}", data={"via": "page", "topic": "tech"})
    assert answer.status_code == 200
    assert "Technology removed" in answer.get_data(as_text=True)
    after = store.subscribers.get(ana.id or 0)
    assert after is not None and after.status == "active"
    assert after.topics == ("politics", "climate")


def test_removing_the_last_topic_unsubscribes(client: FlaskClient, store: Store) -> None:
    solo = store.subscribers.add(Subscriber(email="solo@example.com", topics=("tech",)), now=NOW)
    client.post(f"/u/{token('unsubscribe', solo)}", data={"via": "page", "topic": "tech"})
    after = store.subscribers.get(solo.id or 0)
    assert after is not None and after.status == "unsubscribed" and after.topics == ("tech",)


def test_unknown_topic_is_rejected_and_changes_nothing(
    client: FlaskClient, store: Store, ana: Subscriber
) -> None:
    answer = client.post(f"/u/{token('unsubscribe', ana)}", data={"topic": "gardening"})
    assert answer.status_code == 400
    assert "Unknown topic 'gardening'" in html.unescape(answer.get_data(as_text=True))
    assert store.subscribers.get(ana.id or 0) == ana


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("case", ["tampered", "wrong purpose", "unknown subscriber"])
def test_bad_unsubscribe_link_answers_400_and_changes_nothing(
    client: FlaskClient, store: Store, ana: Subscriber, method: str, case: str
) -> None:
    good = token("unsubscribe", ana)
    bad = {
        "tampered": good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "wrong purpose": token("preferences", ana),
        "unknown subscriber": make_token(SECRET, "unsubscribe", 999),
    }[case]
    answer = getattr(client, method)(f"/u/{bad}", data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 400
    assert "This link is not valid (it was changed, or is for something else)" in answer.get_data(
        as_text=True
    )
    assert store.subscribers.get(ana.id or 0) == ana


# -- preferences ------------------------------------------------------------------------


def test_preferences_page_shows_topics_and_time_zone_and_changes_nothing(
    client: FlaskClient, store: Store, ana: Subscriber
) -> None:
    page = client.get(f"/p/{token('preferences', ana)}").get_data(as_text=True)
    assert re.search(r'value="tech" checked', page) and 'value="health">' in page
    assert '<label for="timezone">' in page and "Europe/London" in page
    assert store.subscribers.get(ana.id or 0) == ana


def test_preferences_save_updates_topics_and_time_zone(
    client: FlaskClient, store: Store, ana: Subscriber
) -> None:
    tok = token("preferences", ana)
    answer = client.post(
        f"/p/{tok}",
        data={
            "csrf": form_signature(SECRET, tok),
            "topics": ["health", "economy"],
            "timezone": "Europe/Berlin",
        },
    )
    assert answer.status_code == 200
    assert "Saved." in answer.get_data(as_text=True)
    after = store.subscribers.get(ana.id or 0)
    assert after is not None
    assert after.topics == ("economy", "health") and after.timezone == "Europe/Berlin"


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({}, "This form expired"),
        ({"csrf": "0" * 64}, "This form expired"),
        ({"csrf": "GOOD", "topics": ["gardening"]}, "Unknown topic: gardening."),
        ({"csrf": "GOOD", "topics": []}, "Choose at least one topic"),
        ({"csrf": "GOOD", "topics": ["tech"], "timezone": "Mars/Olympus"}, "Unknown time zone"),
    ],
    ids=["no csrf", "forged csrf", "unknown topic", "no topic", "bad time zone"],
)
def test_preferences_bad_post_answers_400_and_changes_nothing(
    client: FlaskClient, store: Store, ana: Subscriber, form: dict[str, object], message: str
) -> None:
    tok = token("preferences", ana)
    if form.get("csrf") == "GOOD":
        form = {**form, "csrf": form_signature(SECRET, tok)}
    answer = client.post(f"/p/{tok}", data={"topics": ["health"], **form})
    assert answer.status_code == 400
    assert message in answer.get_data(as_text=True)
    assert store.subscribers.get(ana.id or 0) == ana


def test_csrf_value_of_one_link_does_not_work_for_another(
    client: FlaskClient, store: Store, ana: Subscriber
) -> None:
    bob = store.subscribers.add(Subscriber(email="bob@example.com", topics=("tech",)), now=NOW)
    answer = client.post(
        f"/p/{token('preferences', bob)}",
        data={"csrf": form_signature(SECRET, token("preferences", ana)), "topics": ["health"]},
    )
    assert answer.status_code == 400
    assert store.subscribers.get(bob.id or 0) == bob


def test_unsubscribe_token_does_not_open_the_preference_center(
    client: FlaskClient, ana: Subscriber
) -> None:
    assert client.get(f"/p/{token('unsubscribe', ana)}").status_code == 400


# -- double opt-in ---------------------------------------------------------------------


def confirmation(project: Path, address: str) -> Message:
    """The newest confirmation email the outbox holds for `address`."""
    found = [
        message_from_bytes(p.read_bytes())
        for p in sorted((project / "outbox" / "confirmations").rglob("*.eml"))
    ]
    mine = [m for m in found if address in str(m["To"])]
    assert mine, f"no confirmation for {address} in the outbox"
    return mine[-1]


def text_part(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return bytes(part.get_payload(decode=True)).decode()  # type: ignore[arg-type]
    raise AssertionError("no text part")


def test_signup_then_confirm_link_from_the_email_activates(
    client: FlaskClient, store: Store, project: Path
) -> None:
    answer = client.post(
        "/subscribe",
        data={"email": "New.Reader@Example.COM", "name": "Nia", "topics": ["climate", "tech"]},
        environ_base={"REMOTE_ADDR": "203.0.113.7"},
    )
    assert answer.status_code == 200 and "Check your inbox" in answer.get_data(as_text=True)
    pending = store.subscribers.get_by_email("new.reader@example.com")
    assert pending is not None and pending.status == "pending"
    assert pending.topics == ("tech", "climate") and pending.timezone == "Europe/London"
    assert (
        pending.consent_at,
        pending.consent_method,
        pending.consent_source,
        pending.consent_ip,
    ) == (
        NOW,
        "double-opt-in",
        "web form",
        "203.0.113.7",
    )
    link = re.search(r"https?://\S+/confirm/(\S+)", text_part(confirmation(project, "new.reader")))
    assert link is not None
    confirmed = client.get(f"/confirm/{link.group(1)}")
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.get_data(as_text=True)
    assert store.subscribers.get(pending.id or 0).status == "active"  # type: ignore[union-attr]


def test_signup_of_a_known_address_answers_the_same_and_keeps_the_subscriber(
    client: FlaskClient, store: Store, ana: Subscriber, project: Path
) -> None:
    answer = client.post("/subscribe", data={"email": "ana@example.com", "topics": ["health"]})
    fresh = client.post("/subscribe", data={"email": "zoe@example.com", "topics": ["health"]})
    page = answer.get_data(as_text=True)
    assert page.replace("ana@", "X@") == fresh.get_data(as_text=True).replace("zoe@", "X@")
    assert store.subscribers.get(ana.id or 0) == ana
    assert "already subscribed" in text_part(confirmation(project, "ana@example.com"))


def test_signup_after_unsubscribing_needs_the_new_confirmation(
    client: FlaskClient, store: Store, ana: Subscriber, project: Path
) -> None:
    client.post(f"/u/{token('unsubscribe', ana)}", data={"List-Unsubscribe": "One-Click"})
    before = store.subscribers.get(ana.id or 0)
    client.post("/subscribe", data={"email": "ana@example.com", "topics": ["health"]})
    # Until the mailbox owner confirms, nothing about the address changes.
    assert store.subscribers.get(ana.id or 0) == before
    assert status_reason(store, ana.id or 0) == "one-click"
    link = re.search(r"/confirm/(\S+)", text_part(confirmation(project, "ana@example.com")))
    assert link is not None
    assert client.get(f"/confirm/{link.group(1)}").status_code == 200
    after = store.subscribers.get(ana.id or 0)
    assert after is not None and after.status == "active" and after.topics == ("health",)
    assert (after.consent_method, after.consent_at) == ("double-opt-in", NOW)


def test_old_confirm_link_does_not_resubscribe_an_unsubscribed_address(
    client: FlaskClient, store: Store, ana: Subscriber
) -> None:
    client.post(f"/u/{token('unsubscribe', ana)}", data={"List-Unsubscribe": "One-Click"})
    answer = client.get(f"/confirm/{token('confirm', ana)}")
    assert answer.status_code == 400 and "Sign up again" in answer.get_data(as_text=True)
    assert store.subscribers.get(ana.id or 0).status == "unsubscribed"  # type: ignore[union-attr]


def test_expired_confirm_link_answers_400(config: Config, store: Store) -> None:
    pending = store.subscribers.add(
        Subscriber(email="late@example.com", topics=("tech",), status="pending"), now=NOW
    )
    import digest.tokens as tokens

    old = tokens.make_token(SECRET, "confirm", pending.id or 0)
    client = create_app(config, store, now=NOW, secret=SECRET).test_client()
    real_max = tokens.CONFIRM_MAX_AGE
    tokens.CONFIRM_MAX_AGE = -1  # every token is older than this
    try:
        answer = client.get(f"/confirm/{old}")
    finally:
        tokens.CONFIRM_MAX_AGE = real_max
    assert answer.status_code == 400
    assert store.subscribers.get(pending.id or 0).status == "pending"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"email": "not-an-address"}, "does not look right"),
        ({"email": ""}, "does not look right"),
        ({"email": "ok@example.com", "topics": ["gardening"]}, "Unknown topic."),
    ],
    ids=["no at sign", "empty", "unknown topic"],
)
def test_bad_signup_answers_400_and_stores_nothing(
    client: FlaskClient, store: Store, project: Path, form: dict[str, object], message: str
) -> None:
    answer = client.post("/subscribe", data=form)
    assert answer.status_code == 400 and message in answer.get_data(as_text=True)
    assert store.subscribers.count() == 0
    assert not (project / "outbox" / "confirmations").exists()


def test_subscribe_form_labels_every_input(client: FlaskClient) -> None:
    page = client.get("/subscribe").get_data(as_text=True)
    assert '<html lang="en">' in page and page.count("<h1>") == 1
    assert '<label for="email">' in page and '<label for="name">' in page
    assert page.count('<label class="check"><input type="checkbox"') == 6


def test_healthz_reports_the_store(client: FlaskClient) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.get_json() == {"status": "ok", "store": "ok"}
