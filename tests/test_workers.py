"""`digest worker` processes share an edition queued by `digest send --workers` (PostgreSQL):
two workers deliver each subscriber exactly once; a worker SIGKILLed mid-batch and then
restarted leaves no one out and no one served twice; a SQLite store refuses --workers.

The PostgreSQL tests run in `make test`'s PostgreSQL half (tests/pgserver.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import SECRET
from cuts import drop_connections
from editions import make_edition
from fake_sendgrid import FakeSendGrid
from sqlalchemy import text

from digest.cli import cli
from digest.config import Config
from digest.store import Store, open_store
from digest.store.ledger import STATES
from digest.subscriber import Subscriber

WEEK = "2026-W48"
KEY = f"weekly/{WEEK}"
NOW = datetime(2026, 11, 30, 8, tzinfo=UTC)
AUDIENCE = 120
BATCH = 10
LATENCY = 0.05  # seconds the fake takes per request, so a batch is in flight a while
TIMEOUT = 60.0  # seconds any wait in these tests may take
# Always listed, marked postgres: the SQLite half of `make test` deselects them (-m "not postgres").
PG = [pytest.param("postgres", marks=pytest.mark.postgres)]
on_postgres = pytest.mark.parametrize("store_url", PG, indirect=True)


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        fake.set_latency(LATENCY)
        yield fake


@pytest.fixture
def pg(project: Path, sendgrid: FakeSendGrid) -> Iterator[tuple[Store, list[str]]]:
    """The project on its PostgreSQL schema, pointed at the fake SendGrid, with an approved
    edition and its audience (returned: the addresses it should reach). No schedules, so
    the workers' periodic run-due has nothing to do."""
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["delivery"]["sendgrid"]["host"] = sendgrid.url
    data["delivery"]["batch_size"] = BATCH
    for digest in data["digests"]:
        digest["schedule"]["cron"] = None
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    store = open_store(yaml.safe_load(path.read_text())["store"])
    store.editions.save(make_edition(2, ("politics", "tech"), status="approved"))
    eligible = []
    mixes = [("politics",), ("tech", "health"), ("culture",)]  # the last gets nothing
    for i in range(AUDIENCE):
        sub = Subscriber(email=f"reader{i}@example.org", topics=mixes[i % 3])
        store.subscribers.add(sub, now=NOW)
        if i % 3 != 2:
            eligible.append(sub.email)
    try:
        yield store, eligible
    finally:
        store.close()


def _env(fake: FakeSendGrid) -> dict[str, str]:
    return {**os.environ, "SENDGRID_API_KEY": fake.api_key, "DIGEST_SECRET": SECRET}


def _digest(project: Path, *args: str) -> list[str]:
    code = "import sys; from digest.cli import main; sys.argv[0] = 'digest'; main()"
    return [sys.executable, "-c", code, "--config", str(project / "digest.yaml"), *args]


def _worker(project: Path, fake: FakeSendGrid, concurrency: int = 1) -> subprocess.Popen[bytes]:
    options = ["--heartbeat", "0.5", "--stalled-after", "2", "--concurrency", str(concurrency)]
    return subprocess.Popen(
        _digest(project, "worker", *options),
        env=_env(fake),
        stdout=subprocess.DEVNULL,
        stderr=open(project / f"worker-{time.monotonic_ns()}.log", "wb"),  # noqa: SIM115
    )


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes a test starts; each is stopped (SIGTERM, then SIGKILL) at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _queue(project: Path, fake: FakeSendGrid, *extra: str) -> str:
    """`digest send --workers`, in this process: it returns once the batches are queued."""
    result = CliRunner(env={"SENDGRID_API_KEY": fake.api_key}).invoke(
        cli,
        ["--config", str(project / "digest.yaml"), "send", "weekly", "--week", WEEK,
         "--transport", "sendgrid", "--workers", "--no-preflight", *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output


def _wait(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def _sent(store: Store) -> bool:
    return store.schedules.state(KEY) == "sent"


def _workers_that_sent(store: Store) -> set[int]:
    query = "SELECT DISTINCT worker_id FROM procrastinate_jobs WHERE task_name = :t"
    with store.engine.connect() as conn:
        rows = conn.execute(text(query), {"t": "digest:send_batch"}).scalars()
        return {r for r in rows if r is not None}


@on_postgres
def test_two_workers_share_an_edition_and_serve_each_subscriber_once(
    project: Path,
    sendgrid: FakeSendGrid,
    pg: tuple[Store, list[str]],
    workers: list[subprocess.Popen[bytes]],
) -> None:
    store, eligible = pg
    workers += [_worker(project, sendgrid), _worker(project, sendgrid)]
    # both ready before the batches exist, and each batch in flight a while, so neither
    # can take them all while the other is still starting
    _wait("both workers to start", lambda: _started(store) == 2)
    sendgrid.set_latency(0.2)
    out = _queue(project, sendgrid)
    assert f"queued {len(eligible)} deliveries in {len(eligible) // BATCH} batches" in out
    _wait("the edition to be sent", lambda: _sent(store))
    delivered = Counter(sendgrid.delivered())
    assert sorted(delivered) == sorted(eligible)  # nobody missing, nobody extra
    assert [a for a, n in delivered.items() if n > 1] == []  # nobody twice
    assert store.deliveries.counts(KEY)["sent"] == len(eligible)
    assert len(_workers_that_sent(store)) == 2  # both took a share
    # every request carried at most one batch of identical content
    assert max(len(r["personalizations"]) for r in sendgrid.requests) <= BATCH


@on_postgres
def test_worker_killed_mid_batch_then_restarted_serves_each_subscriber_once(
    project: Path,
    sendgrid: FakeSendGrid,
    pg: tuple[Store, list[str]],
    workers: list[subprocess.Popen[bytes]],
) -> None:
    store, eligible = pg
    _queue(project, sendgrid, "--strict")
    first = _worker(project, sendgrid)
    workers.append(first)
    sendgrid.set_latency(0.5)  # the first batch stays in flight until the kill
    _wait("a batch in flight", lambda: store.deliveries.counts(KEY)["sending"] > 0)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    sendgrid.set_latency(LATENCY)
    workers.append(_worker(project, sendgrid))  # the restart
    _wait("the edition to be sent", lambda: _sent(store))
    delivered = Counter(sendgrid.delivered())
    assert sorted(delivered) == sorted(eligible)  # nobody missing, nobody extra
    assert [a for a, n in delivered.items() if n > 1] == []  # nobody twice
    assert sendgrid.cancelled  # the killed batch was withdrawn, then sent again
    sent = {r["id"] for r in store.deliveries.rows(KEY, state="sent")}
    assert _provider_end_state(sendgrid) == Counter(sent)  # each sent row went out once
    counts = store.deliveries.counts(KEY)
    assert counts["sent"] == len(eligible) and counts["failed"] == counts["sending"] == 0


def _started(store: Store) -> int:
    """How many workers have registered with the queue."""
    with store.engine.connect() as conn:
        if not conn.execute(text("SELECT to_regclass('procrastinate_workers')")).scalar():
            return 0
        return int(conn.execute(text("SELECT count(*) FROM procrastinate_workers")).scalar_one())


def _provider_end_state(fake: FakeSendGrid) -> Counter[int]:
    """How many times the provider delivered each delivery id (from each personalization's
    custom args), leaving out messages of batches cancelled in time."""
    return Counter(
        int(p["custom_args"]["delivery_id"])
        for body, arrived in zip(fake.requests, fake.arrived, strict=True)
        if not fake._withheld(body, arrived)
        for p in body["personalizations"]
    )


def _assert_each_once(store: Store, sendgrid: FakeSendGrid, eligible: list[str]) -> None:
    """The provider's end state against the ledger: each sent row delivered once, only the
    ledger's sent rows delivered, every eligible subscriber among them, nothing left over."""
    delivered = _provider_end_state(sendgrid)
    assert [i for i, n in delivered.items() if n > 1] == []  # nobody twice
    sent = {r["id"]: r["email"] for r in store.deliveries.rows(KEY, state="sent")}
    assert set(delivered) == set(sent)  # the ledger's sent rows, and only those, went out
    assert sorted(sent.values()) == sorted(eligible)  # nobody missing, nobody extra
    counts = store.deliveries.counts(KEY)
    assert counts["sent"] == len(eligible) and counts["failed"] == counts["sending"] == 0


@on_postgres
def test_worker_killed_with_batches_in_flight_beside_another_serves_each_subscriber_once(
    project: Path,
    sendgrid: FakeSendGrid,
    pg: tuple[Store, list[str]],
    workers: list[subprocess.Popen[bytes]],
) -> None:
    """A worker sending 3 batches at once is SIGKILLed while another keeps sending; once it
    is restarted, the provider holds each subscriber's delivery exactly once, and the ledger
    says sent for exactly the rows the provider delivered."""
    store, eligible = pg
    other = _worker(project, sendgrid)  # one batch in flight at most
    first = _worker(project, sendgrid, concurrency=3)
    workers += [other, first]
    _wait("both workers to start", lambda: _started(store) == 2)
    sendgrid.set_latency(0.5)  # batches stay in flight until the kill
    _queue(project, sendgrid, "--strict")
    # 3 batches or more in flight, at most 1 of them the other worker's
    _wait("batches in flight", lambda: store.deliveries.counts(KEY)["sending"] >= 3 * BATCH)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    sendgrid.set_latency(LATENCY)
    workers.append(_worker(project, sendgrid, concurrency=3))  # the restart
    _wait("the edition to be sent", lambda: _sent(store))
    _assert_each_once(store, sendgrid, eligible)
    assert len(sendgrid.cancelled) >= 2  # the killed worker's batches, withdrawn and resent


def test_a_sqlite_store_refuses_workers(project: Path, config: Config) -> None:
    store = open_store(config.store_url)
    store.editions.save(make_edition(2, ("politics", "tech"), status="approved"))
    store.subscribers.add(Subscriber(email="ana@example.org", topics=("tech",)), now=NOW)
    result = CliRunner().invoke(
        cli,
        ["--config", str(project / "digest.yaml"), "send", "weekly", "--week", WEEK,
         "--workers"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "workers need a PostgreSQL store, not sqlite" in result.output
    assert "digest send sends in-process (drop --workers)" in result.output
    assert store.deliveries.counts(KEY) == dict.fromkeys(STATES, 0)  # nothing planned
    assert store.schedules.state(KEY) != "sending"
    store.close()


@pytest.fixture
def fresh(config: Config) -> Iterator[Store]:
    """The project's store on its fresh PostgreSQL schema: no queue tables yet."""
    store = open_store(config.store_url)
    yield store
    store.close()


@on_postgres
def test_workers_starting_together_create_the_queue_tables_once(fresh: Store) -> None:
    """Several processes install the queue on a fresh schema at the same moment: each
    returns, and the tables exist once."""
    from digest.taskqueue import Queue

    queues = [Queue(fresh) for _ in range(4)]
    barrier = threading.Barrier(len(queues))
    errors: list[BaseException] = []

    def install(queue: Queue) -> None:
        barrier.wait(timeout=TIMEOUT)
        try:
            with queue.app.open():
                queue.install()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=install, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert _started(fresh) == 0  # the tables are there (and no worker registered)


@on_postgres
def test_queue_tables_created_while_waiting_for_the_lock_are_not_created_again(
    fresh: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race as it happens: the tables are missing at the first check, and another
    process creates them before this one holds the lock."""
    from digest import taskqueue

    other = taskqueue.Queue(fresh)
    real_lock = taskqueue.run_lock

    @contextlib.contextmanager
    def lock_after_the_other(*args: Any, **kwargs: Any) -> Iterator[None]:
        with real_lock(*args, **kwargs), other.app.open():
            other.app.schema_manager.apply_schema()  # the other process, first
        with real_lock(*args, **kwargs):
            yield

    monkeypatch.setattr(taskqueue, "run_lock", lock_after_the_other)
    queue = taskqueue.Queue(fresh)
    with queue.app.open():
        queue.install()  # must not create them a second time
    with fresh.engine.connect() as conn:
        found = conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar()
    assert found


def test_a_batch_travels_as_runs_of_ids_and_comes_back_whole() -> None:
    """A task's ids go into the queue as runs ([first, last] for consecutive ids) and come
    back as the same ids, in order, whatever their gaps; a flat list of ids is read too."""
    import json
    import random

    from digest.taskqueue import Batch, _args

    rng = random.Random(7)
    cases = [(), (5,), (1, 2), (1, 3), (4, 5, 6, 9, 11, 12)]
    for _ in range(200):
        picked = sorted(rng.sample(range(1, 5000), rng.randint(1, 1000)))
        cases.append(tuple(picked))
    for ids in cases:
        batch = Batch("weekly/2026-W48", "f" * 64, "sendgrid", content_key="tech|A", ids=ids)
        sent = json.loads(json.dumps(_args(batch)))  # as the queue stores it
        assert Batch.of(sent) == batch
    flat = {**_args(Batch("weekly/2026-W48", "f", "sendgrid")), "ids": [3, 4, 9]}
    assert Batch.of(flat).ids == (3, 4, 9)
    # a planned batch: 1,000 ids in a few runs, a short job row
    planned = (*range(1, 181), *range(10_001, 10_174), *range(20_001, 20_648))
    stored = json.dumps(_args(Batch("weekly/2026-W48", "f", "sendgrid", ids=planned))["ids"])
    assert stored == "[[1, 180], [10001, 10173], [20001, 20647]]"


@on_postgres
def test_workers_whose_connections_drop_mid_edition_serve_each_subscriber_once(
    project: Path,
    sendgrid: FakeSendGrid,
    pg: tuple[Store, list[str]],
    workers: list[subprocess.Popen[bytes]],
) -> None:
    """Strict mode, two workers: their connections are cut three times while batches are in
    flight. A worker whose lock connection died goes on with its call, and the final task
    may meanwhile take the lock, withdraw that call's batch and queue its rows again: the
    late answer must not mark them sent. The provider ends with each subscriber once, the
    ledger's sent rows are exactly those, and both workers are still running."""
    store, eligible = pg
    workers += [_worker(project, sendgrid), _worker(project, sendgrid)]
    _wait("both workers to start", lambda: _started(store) == 2)
    sendgrid.set_latency(0.3)
    _queue(project, sendgrid, "--strict")
    dropped = 0
    for cut in range(1, 4):
        _wait(f"cut {cut}: batches in flight", lambda: store.deliveries.counts(KEY)["sending"] > 0)
        dropped += drop_connections(store, [p.pid for p in workers if p.poll() is None])
        time.sleep(0.4)
    assert dropped >= 6  # at least each worker's queue and lock connections, three times
    sendgrid.set_latency(LATENCY)
    _wait("the edition to be sent", lambda: _sent(store))
    _assert_each_once(store, sendgrid, eligible)
    assert [p.poll() for p in workers] == [None, None]  # both still running
    # every task cut off mid-way was tried again: none failed, and the edition's tasks are
    # all the ones `digest send` queued (none queued again by the workers' run-due)
    query = (
        "SELECT task_name, status, args->>'transport' FROM procrastinate_jobs "
        "WHERE task_name IN ('digest:send_batch', 'digest:finish')"
    )

    def jobs() -> list[tuple[str, str, str]]:
        with store.engine.connect() as conn:
            return [(r[0], r[1], r[2]) for r in conn.execute(text(query))]

    # a worker may still be writing down how a task ended when its connection was cut
    _wait("every task to end", lambda: all(j[1] not in ("todo", "doing") for j in jobs()))
    ended = jobs()
    assert len(ended) >= len(eligible) // BATCH + 1  # more if the final task withdrew some
    assert [j for j in ended if j[1:] != ("succeeded", "sendgrid")] == []
