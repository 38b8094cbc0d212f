"""The SendGrid path at scale: `send_edition` end to end against a minimal sender, same fake.

For each size, a temp SQLite store gets N synthetic active subscribers (each with 1–3 of
six topics: 41 distinct topic mixes; five time zones) and one approved edition of a digest
running an A/B test of two variants on the whole list (82 distinct contents). Then, each
in a fresh process of its own (so its peak RSS is its own):

- **digest**: `send_edition` through the real SendGrid transport: render every content,
  plan the audience, stamp each zone's moment, then claim → send → record every batch,
  `delivery.in_flight` requests at once;
- **floor**: in a copy of the same store, a minimal sender doing the same job with nothing
  else: one pass planning the same rows (content keys and variants computed the same
  way), then per batch of 1,000 the same two ledger moves (sending, then sent), the same
  signed links and one orjson body posted with http.client, one request in flight, with
  the garbage collector set as digest sets it for a send (digest.bulk).

The fake SendGrid runs in its own process too, keeps no request body, and validates one
request in 50 against the Mail Send schema. Filling the audience is not counted. Prints
the machine and its load, then per size: recipients/s and seconds end to end, the send
loop alone, requests sent, CPU µs per recipient, and the peak RSS of each process.
With DIGEST_TEST_POSTGRES set (tests/pgserver.py sets it), it then runs bench/workers.py
at each size: PostgreSQL with 1 and 2 `digest worker` processes.

    python bench/send.py                       # 100,000 and 1,000,000 recipients
    python bench/send.py --quick               # 50,000 (what CI runs)
    python bench/send.py --sizes 200000 --in-flight 4 --profile /tmp/send.prof
    python tests/pgserver.py python bench/send.py --quick   # and PostgreSQL workers
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent))  # machine.py and fixtures.py

from fixtures import (  # noqa: E402
    CHILD_TIMEOUT,
    ROOT,
    SECRET,
    TOPICS,
    ZONES,
    FakeProcess,
    edition,
    fill_audience,
    load,
)
from machine import describe  # noqa: E402

VARIANTS = ("A", "B")
FLOOR_PERIOD = "2026-W47"  # the floor's edition (in its own copy of the store)


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    """Run target(conn, *args) in a fresh interpreter (spawn) and return what it sends."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(child, *args))
    process.start()
    try:
        if not parent.poll(CHILD_TIMEOUT):
            process.kill()
            raise SystemExit(f"{target.__name__} gave no answer in {CHILD_TIMEOUT} s")
        answer: dict[str, Any] = parent.recv()
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
    if "error" in answer:
        raise SystemExit(f"{target.__name__} failed: {answer['error']}")
    return answer


def _finish(conn: Connection, started: float, cpu: float, **figures: Any) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    conn.send({**figures, "seconds": time.perf_counter() - started,
               "cpu": time.process_time() - cpu, "rss": usage.ru_maxrss / 1024})  # fmt: skip


# -- the project and its audience -----------------------------------------------------------
def _project(folder: Path, url: str, in_flight: int) -> Path:
    """digest.yaml of the sample project, on this fake, the weekly digest testing A and B."""
    import yaml

    data = yaml.safe_load((ROOT / "digest.yaml").read_text())
    data["store"] = "sqlite:///digest.db"
    data["delivery"]["sendgrid"]["host"] = url
    data["delivery"]["batch_size"] = 1000
    data["delivery"]["in_flight"] = in_flight
    weekly = data["digests"][0]
    weekly["topics"] = list(TOPICS)
    weekly["experiment"] = {
        "variants": [{"key": "A"}, {"key": "B", "subject": "Your week in five minutes"}],
        "test_share": 1.0,
        "wait": "4h",
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "digest.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _audience(conn: Connection, config_path: Path, n: int) -> None:
    from digest.config import load_config

    started, cpu = time.perf_counter(), time.process_time()
    fill_audience(load_config(config_path).store_url, n)
    _finish(conn, started, cpu)


# -- digest ---------------------------------------------------------------------------------
def _digest(conn: Connection, config_path: Path, profile: Path | None) -> None:
    """`send_edition` end to end; sends back its figures."""
    try:
        import cProfile

        from digest import send as sending
        from digest.config import load_config
        from digest.store import open_store
        from digest.transports import make_transport

        config = load_config(config_path)
        store = open_store(config.store_url)
        sent_edition = edition()
        store.editions.save(sent_edition)
        transport = make_transport("sendgrid", config, edition_key=sent_edition.key,
                                   now=lambda: datetime.now(UTC))  # fmt: skip
        start = datetime.now(UTC)
        moments = {zone: start - timedelta(minutes=i) for i, zone in enumerate(ZONES)}
        options = sending.SendOptions(
            batch_size=config.delivery.batch_size, moments=moments.__getitem__, due=start
        )
        marks: list[float] = []
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        started, cpu = time.perf_counter(), time.process_time()
        summary = sending.send_edition(
            sent_edition, config=config, ledger=store.deliveries, transport=transport,
            secret=SECRET, now=lambda: datetime.now(UTC), options=options,
            progress=lambda done, _total: marks.append(time.perf_counter()) if not done else None,
        )  # fmt: skip
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
        loop = time.perf_counter() - (marks[0] if marks else started)
        _finish(conn, started, cpu, sent=summary.sent, failed=summary.failed,
                renders=summary.renders, loop=loop)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - reported by the parent, which exits
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


# -- the floor ------------------------------------------------------------------------------
def _floor(conn: Connection, config_path: Path, url: str, api_key: str) -> None:
    """The minimal sender: plan the same rows in one pass, then per batch the same two ledger
    moves, the same links and one orjson body, posted with http.client, one at a time."""
    try:
        import hashlib
        import http.client
        import json
        import sqlite3
        from urllib.parse import urlsplit

        import orjson

        from digest.bulk import bulk_gc
        from digest.compose import ContentCache, default_renderer, list_id
        from digest.config import load_config
        from digest.tokens import LinkSigner

        with bulk_gc():  # the collector set as digest sets it for a send
            config = load_config(config_path)
            floor_edition = edition(FLOOR_PERIOD)
            cache = ContentCache(default_renderer(config, floor_edition))
            links = LinkSigner(config.site.base_url, SECRET)
            db = sqlite3.connect(config.store_url.removeprefix("sqlite:///"), isolation_level=None)
            where = urlsplit(url)
            headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
            now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            started, cpu = time.perf_counter(), time.process_time()
            # plan: one content key per topic list and variant, as digest computes them
            keys: dict[tuple[str, str], str] = {}
            insert = (
                "INSERT INTO deliveries (edition_key, subscriber_id, email, name, variant, "
                "content_key, state, attempts, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)"
            )
            reader = db.cursor()
            active = "SELECT id, email, name, topics FROM subscribers WHERE status = 'active'"
            reader.execute(active)
            db.execute("BEGIN")
            while chunk := reader.fetchmany(10_000):
                rows = []
                for sid, email, name, topics in chunk:
                    u = hashlib.blake2b(f"{floor_edition.key}:{sid}".encode(), key=b"weekly",
                                        digest_size=8).digest()  # fmt: skip
                    variant = VARIANTS[int.from_bytes(u, "big") >> 63]  # digest's 50/50 split
                    key = keys.get((topics, variant))
                    if key is None:
                        shared = sorted(set(json.loads(topics)) & set(floor_edition.topics()))
                        key = keys[(topics, variant)] = f"{','.join(shared)}|{variant}"
                    rows.append((floor_edition.key, sid, email, name, variant, key, now, now))
                rows.sort(key=lambda r: r[5])
                db.executemany(insert, rows)
            db.execute("COMMIT")
            for key in keys.values():  # every content before the loop, as digest does
                cache.get(key)
            loop_started = time.perf_counter()
            sent = requests = 0
            pending = "FROM deliveries WHERE edition_key = ? AND state = 'pending'"
            distinct = f"SELECT DISTINCT content_key {pending}"
            for (key,) in db.execute(distinct, (floor_edition.key,)).fetchall():
                content = cache.get(key)
                shared = orjson.dumps({
                    "from": {"email": config.sender.address,
                             "name": content.sender_name or config.sender.name},
                    "subject": content.subject,
                    "content": [{"type": "text/plain", "value": content.text},
                                {"type": "text/html", "value": content.html}],
                    "reply_to": {"email": config.sender.reply_to},
                    "headers": {"List-Id": list_id(config, floor_edition)},
                    "categories": ["weekly", *config.delivery.sendgrid.categories],
                })[:-1]  # fmt: skip
                after = 0
                variant = key.rpartition("|")[2]
                query = (f"SELECT id, subscriber_id, email, name {pending} AND content_key = ? "
                         "AND id > ? ORDER BY id LIMIT 1000")  # fmt: skip
                while batch := db.execute(query, (floor_edition.key, key, after)).fetchall():
                    ids = orjson.dumps([r[0] for r in batch]).decode()
                    moved = "UPDATE deliveries SET state = ? WHERE id IN (SELECT value FROM json_each(?))"  # noqa: E501
                    db.execute(moved, ("sending", ids))
                    people = []
                    for rid, sid, email, name in batch:
                        unsubscribe = links.unsubscribe_url(sid, floor_edition.key)
                        people.append({
                            "to": [{"email": email, "name": name}],
                            "substitutions": {"-unsubscribe_url-": unsubscribe,
                                              "-preferences_url-": links.preferences_url(sid)},
                            "headers": {"List-Unsubscribe": f"<{unsubscribe}>",
                                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
                            "custom_args": {"delivery_id": str(rid), "edition": floor_edition.key,
                                            "variant": variant, "subscriber_id": str(sid)},
                        })  # fmt: skip
                    body = shared + b',"personalizations":' + orjson.dumps(people) + b"}"
                    http_conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
                    http_conn.request("POST", "/v3/mail/send", body, headers)
                    answer = http_conn.getresponse()
                    answer.read()
                    http_conn.close()
                    if answer.status != 202:
                        raise RuntimeError(f"the floor's request was refused: HTTP {answer.status}")
                    db.execute(moved, ("sent", ids))
                    sent += len(batch)
                    requests += 1
                    after = batch[-1][0]
            db.close()
            _finish(conn, started, cpu, sent=sent, requests=requests,
                    loop=time.perf_counter() - loop_started)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - reported by the parent, which exits
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


# -- the report -----------------------------------------------------------------------------
def _size(n: int, fake: FakeProcess, args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    try:
        config_path = _project(folder / "digest", fake.url, args.in_flight)
        floor_path = _project(folder / "floor", fake.url, args.in_flight)
        fill = _in_child(_audience, config_path, n)
        # the floor gets a copy of the same store, so neither works beside the other's rows
        store = config_path.parent / "digest.db"
        with contextlib.closing(sqlite3.connect(store)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copyfile(store, floor_path.parent / "digest.db")
        got0, requests0 = fake.count()[:2]
        mine = _in_child(_digest, config_path, args.profile)
        got1, requests1, fake_rss, _cpu = fake.count()
        floor = _in_child(_floor, floor_path, fake.url, fake.api_key)
        got2, requests2 = fake.count()[:2]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    sent = mine["sent"]
    print(f"\n{n:,} subscribers (audience filled in {fill['seconds']:.1f} s, not counted); "
          f"load {load()}")  # fmt: skip
    for who, f, got, requests in (
        (f"digest, {args.in_flight} in flight", mine, got1 - got0, requests1 - requests0),
        ("floor, 1 in flight", floor, got2 - got1, requests2 - requests1),
    ):
        print(f"  {who:<20} {f['sent']:>10,} sent in {f['seconds']:6.1f} s = "
              f"{f['sent'] / f['seconds']:>7,.0f}/s end to end; send loop "
              f"{f['sent'] / f['loop']:>7,.0f}/s; {requests:,} requests "
              f"({got:,} recipients at the fake); CPU {f['cpu'] * 1e6 / max(f['sent'], 1):.0f} "
              f"µs/recipient; peak RSS {f['rss']:.0f} MiB")  # fmt: skip
    ratio = (sent / mine["seconds"]) / (floor["sent"] / floor["seconds"])
    loop_ratio = (sent / mine["loop"]) / (floor["sent"] / floor["loop"])
    print(f"  digest is {ratio:.0%} of the floor end to end, {loop_ratio:.0%} in the send loop; "
          f"{mine['renders']} contents rendered; failed {mine['failed']}; "
          f"fake server peak RSS {fake_rss:.0f} MiB")  # fmt: skip
    if sent != n or floor["sent"] != n:
        raise SystemExit(f"expected {n:,} recipients each, digest sent {sent:,}, "
                         f"the floor {floor['sent']:,}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="audience sizes (default: 100,000 and 1,000,000)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="50,000 recipients only (CI)")
    parser.add_argument("--in-flight", type=int, default=2, help="digest's requests at once")
    parser.add_argument("--profile", type=Path, help="cProfile of digest's run, written here")
    args = parser.parse_args()
    sizes = [50_000] if args.quick else args.sizes

    print(f"machine:      {describe(load=False)}")
    print(f"load average: {load()} (1, 5, 15 min) at start")
    with FakeProcess() as fake:
        os.environ["SENDGRID_API_KEY"] = fake.api_key
        for n in sizes:
            _size(n, fake, args)
    if os.environ.get("DIGEST_TEST_POSTGRES"):
        for n in sizes:
            print(f"\nPostgreSQL, {n:,} subscribers: bench/workers.py", flush=True)
            script = str(ROOT / "bench" / "workers.py")
            command = [sys.executable, script, "--subscribers", str(n)]
            subprocess.run(command, check=True, timeout=CHILD_TIMEOUT)


if __name__ == "__main__":
    main()
