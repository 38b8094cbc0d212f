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
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

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

    with FakeSendGrid() as fake:
        conn.send((fake.url, fake.api_key))
        if not conn.poll(CHILD_TIMEOUT):  # "count?"
            return
        conn.recv()
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        conn.send((len(fake.delivered()), cpu.ru_maxrss / 1024, cpu.ru_utime + cpu.ru_stime))
        conn.poll(CHILD_TIMEOUT)  # "stop", or give up waiting for it


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

    return make_edition(2, TOPICS)


def _machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.platform()}; {cpu}; {os.cpu_count()} cores; Python {platform.python_version()}"
    )


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"


def _config(folder: Path, url: str, batch_size: int) -> Config:
    text = (ROOT / "digest.yaml").read_text()
    text = text.replace("https://api.sendgrid.com", url)
    (folder / "digest.yaml").write_text(text)
    config = load_config(folder / "digest.yaml")
    delivery = config.delivery.model_copy(update={"batch_size": batch_size})
    return config.model_copy(update={"delivery": delivery})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000, help="audience size")
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per provider request")
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
        config = _config(folder, url, args.batch_size)
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
        store.close()
    finally:
        parent.send("stop")
        server.join(timeout=10)
        if server.is_alive():
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = summary.sent
    print(f"machine:      {_machine()}")
    print(f"load average: {load_at_start} at start, {_load()} at end")
    print(f"subscribers:  {args.subscribers:,} (bulk insert {insert_s:.1f} s, not counted)")
    print(f"batch size:   {args.batch_size} ({summary.renders} distinct contents)")
    print(f"plan:         {planned:,} rows in {plan_s:.2f} s = {planned / plan_s:,.0f} "
          f"recipients/s (CPU {plan_cpu * 1e6 / max(planned, 1):.0f} µs/row)")  # fmt: skip
    print(f"send:         {n:,} sent in {send_s:.2f} s = {n / send_s:,.0f} recipients/s "
          f"(CPU {send_cpu * 1e6 / max(n, 1):.0f} µs/recipient in the sender)")  # fmt: skip
    print(f"end to end:   {n / (plan_s + send_s):,.0f} recipients/s")
    print(f"provider got: {delivered:,} recipients; failed {summary.failed}; "
          f"server CPU {server_cpu:.1f} s")  # fmt: skip
    print(f"peak RSS:     sender {rss_mb:,.0f} MiB; fake server {server_mb:,.0f} MiB "
          "(it keeps every request body)")  # fmt: skip


if __name__ == "__main__":
    main()
