"""One-click unsubscribes under load: many at once against `digest serve`, bad links, a
database another command holds locked, and the group commit underneath."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import SECRET
from cuts import drop_connections
from itsdangerous import URLSafeSerializer
from serving import NOW, post, readers, rows, serving
from sqlalchemy import event, func, select, text

from digest.config import Config
from digest.errors import BusyError
from digest.store import Store, open_store
from digest.store.group import GroupCommit
from digest.store.schema import consents
from digest.subscriber import Subscriber
from digest.tokens import BadToken, make_token, read_token
from digest.web import create_app


@pytest.fixture
def serve(project: Path, store: Store) -> Iterator[int]:
    with serving(project) as (port, _proc):
        yield port


def consent_records(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(consents)).scalar_one())


def test_fifty_concurrent_one_click_posts_each_unsubscribe_their_reader_once(
    serve: int, store: Store
) -> None:
    fifty = readers(store, 50)
    before = consent_records(store)
    answers: dict[int, bytes] = {}
    start = threading.Barrier(50)

    def click(reader: Subscriber) -> None:
        start.wait(30)
        answers[reader.id or 0] = post(
            serve, f"/u/{make_token(SECRET, 'unsubscribe', reader.id or 0)}"
        )

    threads = [threading.Thread(target=click, args=(r,)) for r in fifty]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert len(answers) == 50
    for reader in fifty:
        head, _, body = answers[reader.id or 0].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
        assert b"\r\nSet-Cookie" not in head and b"\r\nLocation" not in head
        assert b"\r\nContent-Security-Policy: default-src 'none';" in head
        assert b"You are unsubscribed" in body and reader.email.encode() in body
    after = rows(store)
    for reader in fifty:
        status, reason, updated = after[reader.id or 0]
        assert (status, reason) == ("unsubscribed", "one-click")
        assert updated > NOW  # the server's clock, not the fixture's
    assert consent_records(store) == before  # an unsubscribe adds no consent record


def test_two_serving_processes_share_the_port_and_stop_together(
    project: Path, store: Store
) -> None:
    """With web.processes 2, `digest serve` forks two processes that accept on its one port;
    every POST unsubscribes its reader, and a SIGTERM to `digest serve` stops them all."""
    readers_ = readers(store, 40)
    with serving(project, processes=2) as (port, proc):
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2
        answers: list[bytes] = []
        start = threading.Barrier(40)

        def click(reader: Subscriber) -> None:
            start.wait(30)
            answers.append(post(port, f"/u/{make_token(SECRET, 'unsubscribe', reader.id or 0)}"))

        threads = [threading.Thread(target=click, args=(r,)) for r in readers_]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert len(answers) == 40 and all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers)
    assert {status for status, _reason, _at in rows(store).values()} == {"unsubscribed"}
    assert proc.returncode == 0
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_a_repeated_one_click_answers_200_and_keeps_the_first_change(
    serve: int, store: Store
) -> None:
    (ana,) = readers(store, 1)
    path = f"/u/{make_token(SECRET, 'unsubscribe', ana.id or 0)}"
    assert post(serve, path).startswith(b"HTTP/1.1 200 OK\r\n")
    first = rows(store)[ana.id or 0]
    again = post(serve, path)
    assert again.startswith(b"HTTP/1.1 200 OK\r\n") and ana.email.encode() in again
    assert rows(store)[ana.id or 0] == first


@pytest.mark.parametrize(
    "store_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_one_click_still_answers_after_the_database_cut_its_connections(
    project: Path, config: Config
) -> None:
    """PostgreSQL restarted or the network cut: `digest serve`'s pooled connections are
    dead. The next one-click is still answered 200 and written (a pooled connection is
    checked as it is taken), not refused because the first statement met a dead one."""
    store = open_store(config.store_url)
    try:
        first, second = readers(store, 2)
        with serving(project) as (port, proc):
            assert post(port, _one_click(first)).startswith(b"HTTP/1.1 200 OK\r\n")
            assert drop_connections(store, [proc.pid]) >= 1
            answer = post(port, _one_click(second))
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:200]
        assert rows(store)[second.id or 0][:2] == ("unsubscribed", "one-click")
    finally:
        store.close()


def _one_click(reader: Subscriber) -> str:
    return f"/u/{make_token(SECRET, 'unsubscribe', reader.id or 0)}"


@pytest.mark.parametrize("case", ["tampered", "wrong purpose", "unknown subscriber", "no token"])
def test_bad_one_click_link_answers_400_and_writes_nothing(
    serve: int, store: Store, case: str
) -> None:
    (ana,) = readers(store, 1)
    good = make_token(SECRET, "unsubscribe", ana.id or 0)
    path = {
        "tampered": f"/u/{good[:-2]}{'AA' if not good.endswith('AA') else 'BB'}",
        "wrong purpose": f"/u/{make_token(SECRET, 'preferences', ana.id or 0)}",
        "unknown subscriber": f"/u/{make_token(SECRET, 'unsubscribe', 999_999)}",
        "no token": "/u/",
    }[case]
    before = rows(store)
    answer = post(serve, path)
    status = 404 if case == "no token" else 400
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    if status == 400:
        assert b"This link is not valid (it was changed, or is for something else)" in answer
        assert b"Nothing has been changed." in answer
    assert rows(store) == before


def test_one_click_answers_503_and_writes_nothing_while_another_writer_holds_the_lock(
    config: Config, store: Store
) -> None:
    """Another command holds the write lock (SQLite: the file; PostgreSQL: the row) for
    longer than web.write_wait: the POST gives up with 503 and changes nothing; once the
    lock is gone, the same link works."""
    (ana,) = readers(store, 1)
    quick = config.model_copy(update={"web": config.web.model_copy(update={"write_wait": 0.3})})
    client = create_app(quick, store, now=NOW, secret=SECRET).test_client()
    path = f"/u/{make_token(SECRET, 'unsubscribe', ana.id or 0)}"
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE subscribers SET name = 'Held' WHERE id = :i"), {"i": ana.id})
            holding.set()
            release.wait(30)

    writer = threading.Thread(target=hold)
    writer.start()
    try:
        assert holding.wait(10)
        answer = client.post(path, data={"List-Unsubscribe": "One-Click"})
    finally:
        release.set()
        writer.join(30)

    assert answer.status_code == 503
    assert "Please try again later" in answer.get_data(as_text=True)
    assert rows(store)[ana.id or 0][:2] == ("active", "")
    assert store.subscribers.get(ana.id or 0).name == "Held"  # type: ignore[union-attr]
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert rows(store)[ana.id or 0][:2] == ("unsubscribed", "one-click")


def test_unsubscribes_arriving_during_a_commit_share_the_next_transaction(
    store: Store,
) -> None:
    """The first caller's batch is held inside its transaction; 49 more queue meanwhile
    and go to the database together, in one transaction, when it is done."""
    fifty = readers(store, 50)
    commits: list[bool] = []
    event.listen(store.engine, "commit", lambda _conn: commits.append(True))
    inside, go_on = threading.Event(), threading.Event()
    batches: list[int] = []
    write = store.subscribers._unsubscribe_batch

    def held_write(batch, wait):  # type: ignore[no-untyped-def]
        batches.append(len(batch))
        if len(batches) == 1:
            inside.set()
            assert go_on.wait(30)
        return write(batch, wait)

    store.subscribers._unsubscribes = GroupCommit(held_write, what="unsubscribe")
    emails: dict[int, str | None] = {}

    def click(reader: Subscriber) -> None:
        emails[reader.id or 0] = store.subscribers.unsubscribe(
            reader.id or 0, reason="one-click", now=NOW, wait=30
        )

    first = threading.Thread(target=click, args=(fifty[0],))
    first.start()
    assert inside.wait(10)
    rest = [threading.Thread(target=click, args=(r,)) for r in fifty[1:]]
    for t in rest:
        t.start()
    deadline = time.monotonic() + 10
    while len(store.subscribers._unsubscribes._queue) < 49 and time.monotonic() < deadline:
        time.sleep(0.01)
    go_on.set()
    for t in [first, *rest]:
        t.join(30)

    assert batches == [1, 49] and len(commits) == 2
    assert emails == {r.id: r.email for r in fifty}
    assert {v[:2] for v in rows(store).values()} == {("unsubscribed", "one-click")}


def test_a_caller_still_queued_when_its_wait_ends_is_withdrawn_unwritten() -> None:
    written: list[list[str]] = []
    inside, go_on = threading.Event(), threading.Event()

    def write(batch, wait):  # type: ignore[no-untyped-def]
        written.append(list(batch))
        inside.set()
        assert go_on.wait(30)
        return [item.upper() for item in batch]

    group: GroupCommit[str, str] = GroupCommit(write, what="test")
    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(group.submit("a", wait=30)))
    first.start()
    assert inside.wait(10)
    with pytest.raises(BusyError, match="locked for 0.2 s"):
        group.submit("b", wait=0.2)
    go_on.set()
    first.join(30)
    assert results == ["A"] and written == [["a"]]
    assert group.submit("c", wait=1) == "C" and written == [["a"], ["c"]]


# -- reading tokens -------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [{"s": 7}, {"s": 7, "e": "weekly/2026-W48"}, {"s": 7, "e": "weekly/" + "W48" * 60}],
    ids=["plain", "with edition", "long enough that itsdangerous compresses it"],
)
def test_tokens_itsdangerous_made_are_read_with_the_cached_key(payload: dict[str, Any]) -> None:
    made = URLSafeSerializer(SECRET, salt="unsubscribe").dumps(payload)
    assert made.startswith(".") == (payload.get("e", "").count("W48") > 1)
    assert read_token(SECRET, "unsubscribe", made) == payload
    assert read_token(SECRET, "unsubscribe", make_token(SECRET, "unsubscribe", 7)) == {"s": 7}


@pytest.mark.parametrize(
    "token",
    [
        "",
        "no-dot",
        "eyJzIjo3fQ.",
        "eyJzIjo3fQ.AAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "eyJzIjo3fQ.ümlaut",
        make_token("another-secret-0123456789", "unsubscribe", 7),
        make_token(SECRET, "preferences", 7),
        URLSafeSerializer(SECRET, salt="unsubscribe").dumps("not an object"),
        URLSafeSerializer(SECRET, salt="unsubscribe").dumps({"s": "7"}),
    ],
)
def test_a_token_not_signed_for_unsubscribing_is_refused(token: str) -> None:
    with pytest.raises(BadToken):
        read_token(SECRET, "unsubscribe", token)


def test_a_signed_token_with_a_broken_payload_is_refused() -> None:
    """Signed with the right key but not base64 JSON: refused like a bad signature."""
    from digest.tokens import KeyedMac, _b64, _derive_key

    mac = KeyedMac(_derive_key(SECRET, "unsubscribe"))
    for body in (b"%%%", b"bm90IGpzb24", b".bm90IHpsaWI"):
        with pytest.raises(BadToken):
            read_token(SECRET, "unsubscribe", (body + b"." + _b64(mac.digest(body))).decode())


def test_serve_lets_one_waitress_warning_through_every_few_seconds() -> None:
    """Under a burst waitress warns on every queued request; the log keeps one in 10 s."""
    import logging

    from digest.web.server import EveryFew

    now = [100.0]
    keep = EveryFew(10.0, clock=lambda: now[0])

    def passes(level: int, at: float) -> bool:
        now[0] = at
        return keep.filter(logging.LogRecord("waitress.queue", level, "", 0, "x", None, None))

    assert passes(logging.WARNING, 100.0)
    assert not passes(logging.WARNING, 105.0)
    assert passes(logging.ERROR, 105.0)
    assert passes(logging.WARNING, 110.0)


@pytest.mark.parametrize("multipart", [False, True], ids=["urlencoded", "multipart"])
def test_the_unsubscribe_pages_own_form_still_goes_to_flask(
    config: Config, store: Store, multipart: bool
) -> None:
    """`via`/`topic` in either encoding is the page's form: it leaves one topic only."""
    ana = store.subscribers.add(
        Subscriber(email="ana@example.com", name="Ana", topics=("politics", "tech")), now=NOW
    )
    client = create_app(config, store, now=NOW, secret=SECRET).test_client()
    answer = client.post(
        f"/u/{make_token(SECRET, 'unsubscribe', ana.id or 0)}",
        data={"via": "page", "topic": "tech"},
        content_type="multipart/form-data" if multipart else "application/x-www-form-urlencoded",
    )
    assert answer.status_code == 200 and "removed" in answer.get_data(as_text=True)
    after = store.subscribers.get(ana.id or 0)
    assert after is not None and after.status == "active" and after.topics == ("politics",)
