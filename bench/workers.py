"""Recipients/s of `digest send --workers` with 1 and then 2 `digest worker` processes.

Runs beside a PostgreSQL server named by DIGEST_TEST_POSTGRES; tests/pgserver.py starts a
throwaway one:

    python tests/pgserver.py .venv/bin/python bench/workers.py --subscribers 50000

For each worker count: a fresh schema gets N synthetic subscribers (bulk insert, not
counted) and one approved edition; the workers are started and left idle, then the clock
starts, the edition is queued (prepare + one task per batch of 1,000) and the clock stops
when the edition is sent. The fake SendGrid runs in its own process. Nothing is pinned:
the fake, PostgreSQL and the workers share the machine's cores as the OS schedules them;
the CPU seconds each used are printed so the sharing can be read.
"""

# ruff: noqa: E402  (the standard library comes in only once this folder is off sys.path)
from __future__ import annotations

import os
import sys

# bench/select.py must not shadow the standard library's `select`: drop this folder first
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import importlib.util
import multiprocessing as mp
import signal
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import psutil
import yaml
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
# bench/send.py's fake server, audience and edition (loaded by path: bench/ is no package)
_spec = importlib.util.spec_from_file_location("send_bench", ROOT / "bench" / "send.py")
assert _spec is not None and _spec.loader is not None
send_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(send_bench)

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


def _worker(config: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    code = "import sys; from digest.cli import main; sys.argv[0] = 'digest'; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "--config", str(config), "worker"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _postgres_cpu() -> float:
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "postmaster"):
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
    return total


def _run(base_url: str, n: int, workers: int, api: tuple[str, str]) -> dict[str, float]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{base_url}?options={quote(f'-csearch_path={schema}')}"
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-workers-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        send_bench._audience(url, n, datetime.now(UTC))
        config_path = _project(folder, url, api[0])
        config = load_config(config_path)
        store = open_store(url)
        edition = send_bench._edition()
        store.editions.save(edition)
        env = {**os.environ, "SENDGRID_API_KEY": api[1], "DIGEST_SECRET": send_bench.SECRET}
        os.environ.update(SENDGRID_API_KEY=api[1])
        procs = [_worker(config_path, env) for _ in range(workers)]
        time.sleep(8)  # let them start (imports, queue tables) before the clock starts
        pg_cpu = _postgres_cpu()
        transport = make_transport("sendgrid", config, edition_key=edition.key, now=_now)
        t0 = time.perf_counter()
        queued = send_queued(
            edition, config=config, store=store, transport=transport,
            secret=send_bench.SECRET, now=_now, options=SendOptions(batch_size=1000),
        )  # fmt: skip
        queued_s = time.perf_counter() - t0
        deadline = time.monotonic() + TIMEOUT
        while store.schedules.state(edition.key) != "sent":
            if time.monotonic() > deadline:
                raise SystemExit(f"the edition was not sent within {TIMEOUT:.0f} s")
            time.sleep(0.05)
        total_s = time.perf_counter() - t0
        sent = store.deliveries.counts(edition.key)["sent"]
        worker_cpu = sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs)
        store.close()
        return {"rows": queued.rows, "sent": sent, "queued_s": queued_s, "total_s": total_s,
                "worker_cpu": worker_cpu, "pg_cpu": _postgres_cpu() - pg_cpu}  # fmt: skip
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50_000, help="audience size")
    args = parser.parse_args()
    base_url = os.environ.get("DIGEST_TEST_POSTGRES")
    if not base_url:
        raise SystemExit("usage: python tests/pgserver.py .venv/bin/python bench/workers.py")
    load_at_start = send_bench._load()
    parent, child = mp.Pipe()
    server = mp.Process(target=send_bench._serve, args=(child,), daemon=True)
    server.start()
    api = send_bench._receive(parent, server)
    try:
        results = {w: _run(base_url, args.subscribers, w, api) for w in (1, 2)}
        parent.send("count?")
        delivered, server_mb, server_cpu = send_bench._receive(parent, server)
    finally:
        parent.send("stop")
        server.join(timeout=10)
        if server.is_alive():
            server.kill()
    print(f"machine:      {send_bench._machine()}")
    print(f"load average: {load_at_start} at start, {send_bench._load()} at end")
    print(f"subscribers:  {args.subscribers:,}; batches of 1,000; fake SendGrid in its own "
          "process, PostgreSQL and the workers on the same cores (no pinning)")  # fmt: skip
    for w, r in results.items():
        rate = r["sent"] / r["total_s"]
        print(f"{w} worker{'s' if w > 1 else ' '}:    {r['sent']:,} sent in {r['total_s']:.2f} s = "
              f"{rate:,.0f} recipients/s (queueing {r['queued_s']:.2f} s of it); CPU s: "
              f"workers {r['worker_cpu']:.1f}, PostgreSQL {r['pg_cpu']:.1f}")  # fmt: skip
    speedup = (results[2]["sent"] / results[2]["total_s"]) / (
        results[1]["sent"] / results[1]["total_s"]
    )
    print(f"2 vs 1:       {speedup:.2f}x")
    print(f"provider got: {delivered:,} recipients over both runs; fake server CPU "
          f"{server_cpu:.1f} s, peak RSS {server_mb:,.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
