"""Recipients/s of `digest send --workers` with 1 and then 2 `digest worker` processes.

Runs beside a PostgreSQL server named by DIGEST_TEST_POSTGRES; tests/pgserver.py starts a
throwaway one:

    python tests/pgserver.py .venv/bin/python bench/workers.py --subscribers 50000

For each worker count: a fresh schema gets N synthetic subscribers (bulk insert, not
counted) and one approved edition; the workers are started and left idle, then the clock
starts, the edition is queued (prepare + one task per batch of 1,000) and the clock stops
when the edition is sent. The fake SendGrid runs in its own process. By default nothing is
pinned: the fake, PostgreSQL and the workers share the machine's cores as the OS schedules
them. `--pin` gives the fake the last core to itself and everything else the others (on
2 cores: the fake on one, PostgreSQL and the workers on the other). The CPU seconds each
process used in each run are printed so the sharing can be read. `--concurrency K` runs
K batch tasks at once in each worker process; `--rounds R` repeats the 1-then-2 pair.
"""

# ruff: noqa: E402  (the standard library comes in only once this folder is off sys.path)
from __future__ import annotations

import os
import sys

# bench/select.py must not shadow the standard library's `select`: drop this folder first
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import contextlib
import signal
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import yaml
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
# bench/send.py's fake server, audience and edition (loaded by path: bench/ is no package)
sys.path.append(str(Path(__file__).resolve().parent))  # fixtures.py and machine.py
from fixtures import SECRET, FakeProcess, fill_audience, load
from fixtures import edition as bench_edition
from machine import describe

from digest.config import load_config
from digest.send import SendOptions
from digest.store import open_store
from digest.transports import make_transport
from digest.workers import send_queued

TIMEOUT = 900.0  # seconds any one run may take


def _project(folder: Path, store_url: str, sendgrid: str) -> Path:
    data = yaml.safe_load((ROOT / "digest.yaml").read_text())
    data["store"] = store_url
    data["delivery"]["sendgrid"]["host"] = sendgrid
    data["delivery"]["batch_size"] = 1000
    for digest in data["digests"]:
        digest["schedule"]["cron"] = None  # the workers' run-due has nothing to do
    path = folder / "digest.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def _worker(config: Path, env: dict[str, str], concurrency: int) -> subprocess.Popen[bytes]:
    code = "import sys; from digest.cli import main; sys.argv[0] = 'digest'; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "--config", str(config), "worker",
         "--concurrency", str(concurrency)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _postgres() -> list[psutil.Process]:
    return [
        p for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postmaster")
    ]


def _postgres_cpu() -> float:
    total = 0.0
    for proc in _postgres():
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _idle(procs: list[subprocess.Popen[bytes]], timeout: float = 60.0) -> None:
    """Wait until the workers have started: each used under 20 ms of CPU in half a second."""
    deadline = time.monotonic() + timeout
    time.sleep(2)
    before = [_cpu(p.pid) for p in procs]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = [_cpu(p.pid) for p in procs]
        if all(b - a < 0.02 for a, b in zip(before, now, strict=True)):
            return
        before = now
    raise SystemExit(f"the workers were still busy starting after {timeout:.0f} s")


def _pin(fake_pid: int) -> str:
    """The fake alone on the last core; this process, PostgreSQL (new backends inherit the
    postmaster's cores) and the workers (they inherit ours) on the others."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return "one core: nothing pinned"
    rest = set(cores[:-1])
    os.sched_setaffinity(fake_pid, {cores[-1]})
    os.sched_setaffinity(0, rest)
    for proc in _postgres():
        with contextlib.suppress(psutil.Error):
            proc.cpu_affinity(sorted(rest))
    return f"fake SendGrid pinned to core {cores[-1]}, PostgreSQL and the workers to {sorted(rest)}"


def _run(
    base_url: str, n: int, workers: int, concurrency: int, fake: FakeProcess
) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{base_url}?options={quote(f'-csearch_path={schema}')}"
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-workers-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fill_audience(url, n)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ANALYZE {schema}.subscribers"))  # as autovacuum would, in time
        config_path = _project(folder, url, fake.url)
        config = load_config(config_path)
        store = open_store(url)
        edition = bench_edition()
        store.editions.save(edition)
        env = {**os.environ, "SENDGRID_API_KEY": fake.api_key, "DIGEST_SECRET": SECRET}
        os.environ.update(SENDGRID_API_KEY=fake.api_key)
        procs = [_worker(config_path, env, concurrency) for _ in range(workers)]
        _idle(procs)  # started (imports, queue tables) before the clock starts
        load = os.getloadavg()[0]
        pg_cpu, fake_cpu = _postgres_cpu(), fake.count()[3]
        worker_cpu = [_cpu(p.pid) for p in procs]
        transport = make_transport("sendgrid", config, edition_key=edition.key, now=_now)
        t0 = time.perf_counter()
        queued = send_queued(
            edition, config=config, store=store, transport=transport,
            secret=SECRET, now=_now, options=SendOptions(batch_size=1000),
        )  # fmt: skip
        queued_s = time.perf_counter() - t0
        deadline = time.monotonic() + TIMEOUT
        while store.schedules.state(edition.key) != "sent":
            if time.monotonic() > deadline:
                raise SystemExit(f"the edition was not sent within {TIMEOUT:.0f} s")
            time.sleep(0.05)
        total_s = time.perf_counter() - t0
        sent = store.deliveries.counts(edition.key)["sent"]
        worker_cpu = [_cpu(p.pid) - c for p, c in zip(procs, worker_cpu, strict=True)]
        store.close()
        return {"rows": queued.rows, "sent": sent, "queued_s": queued_s, "total_s": total_s,
                "worker_cpu": worker_cpu, "pg_cpu": _postgres_cpu() - pg_cpu,
                "fake_cpu": fake.count()[3] - fake_cpu, "load": load}  # fmt: skip
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _now() -> datetime:
    return datetime.now(UTC)


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50_000, help="audience size")
    parser.add_argument("--concurrency", type=int, default=1, help="tasks at once per worker")
    parser.add_argument("--rounds", type=int, default=1, help="1-then-2 pairs to run")
    parser.add_argument("--pin", action="store_true", help="give the fake a core of its own")
    args = parser.parse_args()
    base_url = os.environ.get("DIGEST_TEST_POSTGRES")
    if not base_url:
        raise SystemExit("usage: python tests/pgserver.py .venv/bin/python bench/workers.py")
    load_at_start = load()
    fake = FakeProcess().__enter__()
    sharing = "nothing pinned: the fake, PostgreSQL and the workers share every core"
    results: list[tuple[int, dict[str, Any]]] = []
    try:
        if args.pin:
            sharing = _pin(fake.process.pid or 0)
        for _ in range(args.rounds):
            for w in (1, 2):
                results.append((w, _run(base_url, args.subscribers, w, args.concurrency, fake)))
        delivered, _requests, server_mb, _cpu_s = fake.count()
    finally:
        fake.__exit__(None, None, None)
    print(f"machine:      {describe(load=False)}")
    print(f"load average: {load_at_start} at start, {load()} at end")
    print(f"subscribers:  {args.subscribers:,}; batches of 1,000; {args.concurrency} task(s) "
          f"at once per worker; fake SendGrid in its own process; {sharing}")  # fmt: skip
    rates: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for w, r in results:
        rate, after = r["sent"] / r["total_s"], r["sent"] / (r["total_s"] - r["queued_s"])
        rates[w].append((rate, after))
        cpu = " + ".join(f"{c:.1f}" for c in r["worker_cpu"])
        print(f"{w} worker{'s' if w > 1 else ' '}:    {r['sent']:,} sent in {r['total_s']:.2f} s = "
              f"{rate:,.0f} recipients/s end to end; queueing {r['queued_s']:.2f} s of it "
              f"(one process), {after:,.0f}/s after it; load {r['load']:.1f}; CPU s: workers "
              f"{cpu}, PostgreSQL {r['pg_cpu']:.1f}, fake {r['fake_cpu']:.1f}")  # fmt: skip
    for i, what in enumerate(("end to end", "after queueing")):
        pairs = [two[i] / one[i] for one, two in zip(rates[1], rates[2], strict=True)]
        print(f"2 vs 1:       {', '.join(f'{p:.2f}x' for p in pairs)} {what} "
              "(each pair run back to back)")  # fmt: skip
    print(f"provider got: {delivered:,} recipients over all runs; fake server peak RSS "
          f"{server_mb:,.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
