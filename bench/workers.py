"""Recipients/s of `digest send --workers` with 1 and then 2 `digest worker` processes.

Runs beside a PostgreSQL server named by DIGEST_TEST_POSTGRES; tests/pgserver.py starts a
throwaway one:

    python tests/pgserver.py -c fsync=on -c full_page_writes=on \
        .venv/bin/python bench/workers.py --subscribers 50000

(the test server skips its syncs unless told: the `-c` options make it sync as a real
deployment does; the settings are printed).

For each worker count: a fresh schema gets N synthetic subscribers (bulk insert, not
counted) and one approved edition; the workers are started and left idle, then the clock
starts, the edition is queued (prepare + one task per batch of 1,000) and the clock stops
when the edition is sent. The fake SendGrid runs in its own process. By default nothing is
pinned: the fake, PostgreSQL and the workers share the machine's cores as the OS schedules
them. `--pin` gives the fake the last core to itself and everything else the others (on
2 cores: the fake on one, PostgreSQL and the workers on the other). The CPU seconds each
process used in each run are printed so the sharing can be read (and how busy each worker
was, so an idle one shows), each run's line as soon as it ends. From each 1-worker run's
figures it prints the ceiling: the most any number of workers could gain over it on this
machine's cores, with queueing as long (one process) and sending's CPU seconds (workers,
PostgreSQL, the fake) spread over every core without loss. A run that fails prints
what failed and each worker's last output, and the script exits 1. `--concurrency K` runs
K batch tasks at once in each worker process (default: the worker's own default,
`delivery.in_flight`); `--rounds R` repeats the 1-then-2 pair.
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
import shutil
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
from digest.taskqueue import send_queued
from digest.transports import make_transport

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


class BenchFailed(Exception):
    """A run did not end with its edition sent; the message says what happened."""


def _worker(
    config: Path, env: dict[str, str], concurrency: int | None, log: Path
) -> subprocess.Popen[bytes]:
    """A `digest worker` process (its own default concurrency unless given), its output
    kept in `log` so a failed run can show it."""
    code = "import sys; from digest.cli import main; sys.argv[0] = 'digest'; main()"
    command = [sys.executable, "-c", code, "--config", str(config), "worker"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _check_alive(procs: list[subprocess.Popen[bytes]]) -> None:
    for i, proc in enumerate(procs):
        if proc.poll() is not None:
            raise BenchFailed(f"worker {i + 1} exited with {proc.returncode} during the run")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no output: {exc})"
    cut = [line if len(line) <= 300 else line[:300] + " …" for line in text.splitlines()[-lines:]]
    return "\n".join(cut) or "(no output)"


def _server(base_url: str) -> psutil.Process:
    """The postmaster of the server at `base_url` (the parent of a backend): only its
    processes are counted, not another PostgreSQL that runs on the same machine."""
    engine = create_engine(base_url)
    try:
        with engine.connect() as conn:  # (a backend ends with its connection)
            backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            parent = psutil.Process(backend).parent()
    finally:
        engine.dispose()
    if parent is None:
        raise BenchFailed(f"PostgreSQL backend {backend} has no parent process")
    return parent


def _settings(base_url: str) -> str:
    """The server settings that decide what a commit costs (a benchmark of a server that
    skips its syncs measures no real deployment)."""
    names = ("server_version", "fsync", "full_page_writes", "synchronous_commit",
             "shared_buffers", "random_page_cost")  # fmt: skip
    engine = create_engine(base_url)
    try:
        with engine.connect() as conn:
            shown = [f"{n} {conn.execute(text(f'SHOW {n}')).scalar()}" for n in names]
    finally:
        engine.dispose()
    return ", ".join(shown)


def _postgres(server: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [server, *server.children()]
    return [server]


def _postgres_cpu(server: psutil.Process) -> float:
    """CPU seconds of the server's processes so far, those that ended included (the
    postmaster waited for them, so they count in its children's times)."""
    times = server.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for proc in _postgres(server)[1:]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def _idle(procs: list[subprocess.Popen[bytes]], timeout: float = 60.0) -> None:
    """Wait until the workers have started: each used under 20 ms of CPU in half a second."""
    deadline = time.monotonic() + timeout
    time.sleep(2)
    _check_alive(procs)
    before = [_cpu(p.pid) for p in procs]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        _check_alive(procs)
        now = [_cpu(p.pid) for p in procs]
        if all(b - a < 0.02 for a, b in zip(before, now, strict=True)):
            return
        before = now
    raise BenchFailed(f"the workers were still busy starting after {timeout:.0f} s")


def _pin(fake_pid: int, server: psutil.Process) -> str:
    """The fake alone on the last core; this process, PostgreSQL (new backends inherit the
    postmaster's cores) and the workers (they inherit ours) on the others."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return "one core: nothing pinned"
    rest = set(cores[:-1])
    os.sched_setaffinity(fake_pid, {cores[-1]})
    os.sched_setaffinity(0, rest)
    for proc in _postgres(server):
        with contextlib.suppress(psutil.Error):
            proc.cpu_affinity(sorted(rest))
    return f"fake SendGrid pinned to core {cores[-1]}, PostgreSQL and the workers to {sorted(rest)}"


def _run(
    base_url: str, n: int, workers: int, concurrency: int | None, fake: FakeProcess
) -> dict[str, Any]:
    server = _server(base_url)
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
            # as autovacuum would, in time (and not while the clock runs)
            conn.execute(text(f"VACUUM ANALYZE {schema}.subscribers"))
        config_path = _project(folder, url, fake.url)
        config = load_config(config_path)
        store = open_store(url)
        edition = bench_edition()
        store.editions.save(edition)
        env = {**os.environ, "SENDGRID_API_KEY": fake.api_key, "DIGEST_SECRET": SECRET}
        os.environ.update(SENDGRID_API_KEY=fake.api_key)
        logs = [folder / f"worker{i + 1}.log" for i in range(workers)]
        procs = [_worker(config_path, env, concurrency, log) for log in logs]
        try:
            return _timed(store, config, edition, procs, fake, server)
        except Exception as exc:
            store.close()
            shown = "\n".join(
                f"--- worker {i + 1} output (last lines):\n{_tail(log)}"
                for i, log in enumerate(logs)
            )
            raise BenchFailed(f"{type(exc).__name__}: {exc}\n{shown}") from exc
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
        shutil.rmtree(folder, ignore_errors=True)  # its worker logs were shown on failure


def _timed(
    store: Any,
    config: Any,
    edition: Any,
    procs: list[subprocess.Popen[bytes]],
    fake: FakeProcess,
    server: psutil.Process,
) -> dict[str, Any]:
    """Queue the edition with the workers idle and time it to sent."""
    _idle(procs)  # started (imports, queue tables) before the clock starts
    load = os.getloadavg()[0]
    pg_cpu, fake_cpu = _postgres_cpu(server), fake.count()[3]
    worker_cpu = [_cpu(p.pid) for p in procs]
    transport = make_transport("sendgrid", config, edition_key=edition.key, now=_now)
    t0, cpu0 = time.perf_counter(), time.process_time()
    queued = send_queued(
        edition, config=config, store=store, transport=transport,
        secret=SECRET, now=_now, options=SendOptions(batch_size=1000),
    )  # fmt: skip
    queued_s, cpu1 = time.perf_counter() - t0, time.process_time()
    pg_queueing = _postgres_cpu(server) - pg_cpu
    deadline = time.monotonic() + TIMEOUT
    while store.schedules.state(edition.key) != "sent":
        if time.monotonic() > deadline:
            counts = store.deliveries.counts(edition.key)
            raise BenchFailed(f"the edition was not sent within {TIMEOUT:.0f} s: {counts}")
        _check_alive(procs)
        time.sleep(0.05)
    total_s = time.perf_counter() - t0
    # CPU read before any connection closes (a backend that ended counts in its
    # postmaster's children's times only once the postmaster has waited for it)
    pg_cpu = _postgres_cpu(server) - pg_cpu
    worker_cpu = [_cpu(p.pid) - c for p, c in zip(procs, worker_cpu, strict=True)]
    fake_cpu = fake.count()[3] - fake_cpu
    queue_cpu, wait_cpu = cpu1 - cpu0, time.process_time() - cpu1
    sent = store.deliveries.counts(edition.key)["sent"]
    store.close()
    return {"rows": queued.rows, "sent": sent, "queued_s": queued_s, "total_s": total_s,
            "worker_cpu": worker_cpu, "pg_cpu": pg_cpu, "pg_queueing": pg_queueing,
            "fake_cpu": fake_cpu, "queue_cpu": queue_cpu, "wait_cpu": wait_cpu,
            "load": load}  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC)


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _line(w: int, r: dict[str, Any]) -> tuple[str, float, float]:
    """A run's line, its rate end to end and its rate after queueing."""
    rate, after = r["sent"] / r["total_s"], r["sent"] / (r["total_s"] - r["queued_s"])
    cpu = " + ".join(f"{c:.1f}" for c in r["worker_cpu"])
    busy = " + ".join(f"{c / r['total_s']:.0%}" for c in r["worker_cpu"])
    per = r["pg_cpu"] / max(r["sent"], 1) * 1e6
    text = (f"{w} worker{'s' if w > 1 else ' '}:    {r['sent']:,} sent in {r['total_s']:.2f} s = "
            f"{rate:,.0f} recipients/s end to end; queueing {r['queued_s']:.2f} s of it "
            f"(one process), {after:,.0f}/s after it; load {r['load']:.1f}; CPU s: workers "
            f"{cpu} (busy {busy} of the run), PostgreSQL {r['pg_cpu']:.1f} ({per:.0f} us a "
            f"recipient; {r['pg_queueing']:.1f} while queueing), "
            f"fake {r['fake_cpu']:.1f}, queueing process {r['queue_cpu']:.1f}")  # fmt: skip
    return text, rate, after


def _ceiling(r: dict[str, Any], cores: int) -> tuple[float, float]:
    """The most any worker count can gain over run `r` on `cores` cores, end to end, and
    the CPU seconds its sending took: queueing stays as long (one process), and sending's
    CPU (workers, PostgreSQL, the fake, the wait) is spread over every core at best."""
    sending = sum(r["worker_cpu"]) + r["pg_cpu"] - r["pg_queueing"] + r["fake_cpu"] + r["wait_cpu"]
    return r["total_s"] / (r["queued_s"] + sending / cores), sending


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50_000, help="audience size")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="tasks at once per worker (default: delivery.in_flight)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="1-then-2 pairs to run")
    parser.add_argument("--pin", action="store_true", help="give the fake a core of its own")
    args = parser.parse_args()
    base_url = os.environ.get("DIGEST_TEST_POSTGRES")
    if not base_url:
        raise SystemExit("usage: python tests/pgserver.py .venv/bin/python bench/workers.py")
    tasks = "the worker's default" if args.concurrency is None else str(args.concurrency)
    print(f"machine:      {describe(load=False)}")
    print(f"load average: {load()} at start")
    print(f"PostgreSQL:   {_settings(base_url)}")
    fake = FakeProcess().__enter__()
    sharing = "nothing pinned: the fake, PostgreSQL and the workers share every core"
    rates: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    ceilings: list[float] = []  # per round, from its 1-worker run
    cores = os.cpu_count() or 1
    try:
        if args.pin:
            sharing = _pin(fake.process.pid or 0, _server(base_url))
        print(f"subscribers:  {args.subscribers:,}; batches of 1,000; {tasks} task(s) at once "
              f"per worker; fake SendGrid in its own process; {sharing}", flush=True)  # fmt: skip
        for round_ in range(1, args.rounds + 1):
            for w in (1, 2):
                try:
                    r = _run(base_url, args.subscribers, w, args.concurrency, fake)
                except Exception as exc:
                    print(f"FAILED: round {round_}, {w} worker(s): {exc}", flush=True)
                    raise SystemExit(1) from None
                text, rate, after = _line(w, r)
                rates[w].append((rate, after))
                print(text, flush=True)
                if w == 1:
                    most, sending = _ceiling(r, cores)
                    ceilings.append(most)
                    print(f"ceiling:      {most:.2f}x for any number of workers: queueing "
                          f"{r['queued_s']:.2f} s as it is, sending's {sending:.1f} CPU s over "
                          f"{cores} cores", flush=True)  # fmt: skip
        delivered, _requests, server_mb, _cpu_s = fake.count()
    finally:
        fake.__exit__(None, None, None)
    for i, what in enumerate(("end to end", "after queueing")):
        pairs = [two[i] / one[i] for one, two in zip(rates[1], rates[2], strict=True)]
        print(f"2 vs 1:       {', '.join(f'{p:.2f}x' for p in pairs)} {what} "
              "(each pair run back to back)")  # fmt: skip
    print(f"2 vs 1 limit: {', '.join(f'{c:.2f}x' for c in ceilings)} end to end, "
          "the ceiling of each pair's 1-worker run on this machine's cores")  # fmt: skip
    print(f"provider got: {delivered:,} recipients over all runs; fake server peak RSS "
          f"{server_mb:,.0f} MiB")  # fmt: skip
    print(f"load average: {load()} at end", flush=True)


if __name__ == "__main__":
    main()
