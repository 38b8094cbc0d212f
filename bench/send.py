"""Throughput and memory of planning and `send_edition` through the real SendGrid transport.

A temp SQLite store gets N synthetic active subscribers (bulk insert, in a child process
so its memory is not counted) and one edition; the fake SendGrid server runs in its own
process, so it does not share our GIL. Prints the machine and its load, recipients/s for
planning, sending and end to end, and the peak RSS of the sender and of the fake server.
Run at two sizes to see that the sender's memory does not grow with the list:

    python bench/send.py --subscribers 20000
    python bench/send.py --subscribers 100000
    python bench/send.py --subscribers 30000 --profile /tmp/send.prof   # cProfile of plan + send
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing as mp
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
sys.path.append(str(Path(__file__).resolve().parent))  # machine.py, also when imported

from machine import describe  # noqa: E402

from digest import send as sending  # noqa: E402
from digest.compose import content_key  # noqa: E402
from digest.config import Config, load_config  # noqa: E402
from digest.editions import Edition  # noqa: E402
from digest.store import open_store  # noqa: E402
from digest.store.schema import subscribers  # noqa: E402
from digest.transports import make_transport  # noqa: E402

TOPICS = ("politics", "tech", "economy", "climate", "culture", "health")
SECRET = "bench-secret-0123456789"
INSERT_CHUNK = 10_000
CHILD_TIMEOUT = 600  # seconds any child process may take to answer


def _serve(conn: Connection) -> None:
    """The fake SendGrid in a child process: report its URL, then serve until told to stop."""
    from fake_sendgrid import FakeSendGrid

    with FakeSendGrid(keep_bodies=False, validate_every=50) as fake:
        conn.send((fake.url, fake.api_key))
        while conn.poll(CHILD_TIMEOUT):  # "count?" any number of times, then "stop"
            if conn.recv() == "stop":
                return
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            conn.send((fake.accepted, cpu.ru_maxrss / 1024, cpu.ru_utime + cpu.ru_stime))


def _receive(conn: Connection, child: mp.Process) -> tuple:
    """The child's next message, or exit if it died or went quiet for CHILD_TIMEOUT seconds."""
    if not conn.poll(CHILD_TIMEOUT):
        child.kill()
        raise SystemExit(f"the fake SendGrid process gave no answer in {CHILD_TIMEOUT} s "
                         f"(exit code {child.exitcode})")  # fmt: skip
    return conn.recv()  # type: ignore[no-any-return]


def _audience(url: str, n: int, now: datetime) -> None:
    """N active subscribers, each with 1–3 topics drawn with a fixed seed."""
    store = open_store(url)
    rng = random.Random(42)
    rows = []
    with store.engine.begin() as conn:
        for i in range(n):
            topics = rng.sample(TOPICS, rng.randint(1, 3))
            rows.append(
                {"email": f"reader{i}@example.org", "name": f"Reader {i}", "topics": topics,
                 "timezone": "UTC", "locale": "en", "status": "active", "status_reason": "",
                 "consent_method": "import", "consent_source": "bench", "consent_ip": "",
                 "created_at": now, "updated_at": now}
            )  # fmt: skip
            if len(rows) == INSERT_CHUNK:
                conn.execute(subscribers.insert(), rows)
                rows = []
        if rows:
            conn.execute(subscribers.insert(), rows)
    store.close()


def _edition() -> Edition:
    from editions import make_edition

    return make_edition(2, TOPICS, status="approved")


def _floor(
    url: str, fake_url: str, api_key: str, edition: Edition, config: Config, batch: int
) -> tuple[int, float]:
    """The minimal sender: the same ledger moves (claim, then record, one UPDATE each per
    batch), the same links, one JSON body per batch with the content serialised once,
    posted with http.client to the same fake. Returns (recipients sent, seconds)."""
    import http.client
    import json
    import sqlite3
    from urllib.parse import urlsplit

    from digest.compose import ContentCache, default_renderer
    from digest.tokens import LinkSigner

    db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    cache = ContentCache(default_renderer(config, edition))
    links = LinkSigner(config.site.base_url, SECRET)
    where = urlsplit(fake_url)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    pending = "FROM deliveries WHERE edition_key=? AND state='pending'"
    sent, started = 0, time.perf_counter()
    keys = [k for (k,) in db.execute(f"SELECT DISTINCT content_key {pending}", (edition.key,))]
    for key in keys:
        content = cache.get(key)
        shared = json.dumps(
            {
                "from": {"email": config.sender.address},
                "subject": content.subject,
                "content": [
                    {"type": "text/plain", "value": content.text},
                    {"type": "text/html", "value": content.html},
                ],
            }
        )[:-1]
        after = 0
        rest = "AND content_key=? AND id>? ORDER BY id LIMIT ?"
        query = f"SELECT id, subscriber_id, email {pending} {rest}"
        while rows := db.execute(query, (edition.key, key, after, batch)).fetchall():
            ids = ",".join(str(r[0]) for r in rows)
            db.execute(f"UPDATE deliveries SET state='sending' WHERE id IN ({ids})")
            people = [
                {
                    "to": [{"email": email}],
                    "substitutions": {
                        "-unsubscribe_url-": links.unsubscribe_url(sid, edition.key),
                        "-preferences_url-": links.preferences_url(sid),
                    },
                    "custom_args": {"delivery_id": str(rid)},
                }
                for rid, sid, email in rows
            ]
            body = f'{shared}, "personalizations": {json.dumps(people)}}}'.encode()
            conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
            conn.request("POST", "/v3/mail/send", body, headers)
            answer = conn.getresponse()
            answer.read()
            conn.close()
            if answer.status != 202:
                raise SystemExit(f"the floor's request was refused: HTTP {answer.status}")
            db.execute(f"UPDATE deliveries SET state='sent' WHERE id IN ({ids})")
            sent += len(rows)
            after = rows[-1][0]
    db.close()
    return sent, time.perf_counter() - started


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"


def _config(folder: Path, url: str, batch_size: int, in_flight: int) -> Config:
    text = (ROOT / "digest.yaml").read_text()
    text = text.replace("https://api.sendgrid.com", url)
    (folder / "digest.yaml").write_text(text)
    config = load_config(folder / "digest.yaml")
    delivery = config.delivery.model_copy(update={"batch_size": batch_size, "in_flight": in_flight})
    return config.model_copy(update={"delivery": delivery})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000, help="audience size")
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per provider request")
    parser.add_argument("--in-flight", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--profile", type=Path, help="write cProfile stats of plan + send here")
    args = parser.parse_args()
    load_at_start = _load()

    parent, child = mp.Pipe()
    server = mp.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    url, api_key = _receive(parent, server)
    os.environ["SENDGRID_API_KEY"] = api_key
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    try:
        now = datetime.now(UTC)
        config = _config(folder, url, args.batch_size, args.in_flight)
        t0 = time.perf_counter()
        filler = mp.Process(target=_audience, args=(config.store_url, args.subscribers, now))
        filler.start()
        filler.join(timeout=CHILD_TIMEOUT)
        if filler.is_alive() or filler.exitcode != 0:
            filler.kill()
            raise SystemExit(f"filling the audience failed (exit {filler.exitcode})")
        insert_s = time.perf_counter() - t0
        store = open_store(config.store_url)
        edition = _edition()
        store.editions.save(edition)
        topics = edition.topics()
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()

        t1, cpu1 = time.perf_counter(), time.process_time()
        planned = store.deliveries.plan(
            edition.key, lambda _i, t: (content_key(t, topics, "A"), "A"), now=now
        )
        plan_s, plan_cpu = time.perf_counter() - t1, time.process_time() - cpu1

        transport = make_transport("sendgrid", config, edition_key=edition.key, now=lambda: now)
        t2, cpu2 = time.perf_counter(), time.process_time()
        summary = sending.send_edition(
            edition, config=config, ledger=store.deliveries, transport=transport, secret=SECRET,
            now=lambda: datetime.now(UTC),
            options=sending.SendOptions(batch_size=args.batch_size),
        )  # fmt: skip
        send_s, send_cpu = time.perf_counter() - t2, time.process_time() - cpu2
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
        parent.send("count?")
        delivered, server_mb, server_cpu = _receive(parent, server)
        # the floor, on the same audience planned again under another edition key
        floor_edition = replace(edition, period="2026-W47")
        store.editions.save(floor_edition)
        store.deliveries.plan(
            floor_edition.key, lambda _i, t: (content_key(t, topics, "A"), "A"), now=now
        )
        store.close()
        floor_n, floor_s = _floor(config.store_url, url, api_key, floor_edition, config,
                                  args.batch_size)  # fmt: skip
        parent.send("count?")
        floor_got = _receive(parent, server)[0] - delivered
    finally:
        parent.send("stop")
        server.join(timeout=10)
        if server.is_alive():
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = summary.sent
    print(f"machine:      {describe(load=False)}")
    print(f"load average: {load_at_start} at start, {_load()} at end")
    print(f"subscribers:  {args.subscribers:,} (bulk insert {insert_s:.1f} s, not counted)")
    print(f"batch size:   {args.batch_size} ({summary.renders} distinct contents)")
    print(f"plan:         {planned:,} rows in {plan_s:.2f} s = {planned / plan_s:,.0f} "
          f"recipients/s (CPU {plan_cpu * 1e6 / max(planned, 1):.0f} µs/row)")  # fmt: skip
    print(f"send:         {n:,} sent in {send_s:.2f} s = {n / send_s:,.0f} recipients/s "
          f"(CPU {send_cpu * 1e6 / max(n, 1):.0f} µs/recipient in the sender)")  # fmt: skip
    print(f"end to end:   {n / (plan_s + send_s):,.0f} recipients/s "
          f"({args.in_flight} request(s) in flight)")  # fmt: skip
    print(f"floor:        a minimal sender, same fake and ledger moves: {floor_n:,} sent in "
          f"{floor_s:.2f} s = {floor_n / floor_s:,.0f} recipients/s (provider got {floor_got:,}); "
          f"digest's send is {n / send_s / (floor_n / floor_s):.0%} of it")  # fmt: skip
    print(f"provider got: {delivered:,} recipients; failed {summary.failed}; "
          f"server CPU {server_cpu:.1f} s")  # fmt: skip
    print(f"peak RSS:     sender {rss_mb:,.0f} MiB; fake server {server_mb:,.0f} MiB "
          "(it keeps no request body)")  # fmt: skip


if __name__ == "__main__":
    main()
