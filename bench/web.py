"""One-click unsubscribes under load: bursts of 200 concurrent POSTs against `digest serve`.

A temp project gets a real SQLite store of subscribers (imported from a generated CSV)
and real signed unsubscribe tokens. The server runs as a child process; this process
sends rounds of 200 concurrent RFC 8058 POSTs (each on its own connection, as mail
providers do), each to a different subscriber, and prints req/s, p50/p99 latency, the
server's CPU time per POST, the client's, and the load average (the machine is shared:
latency moves with the load, CPU per POST much less), then checks every POST unsubscribed
its reader.

The client is lean on purpose, since it shares the cores with the server: one thread,
non-blocking sockets on an epoll selector, each request's bytes built before the burst.
The reference, in the same run, is the same Flask app under waitress with waitress's own
defaults (4 threads, 100 connections), where the one-click middleware answers through
WSGI; then `digest serve` with digest's defaults; then `web.processes` and other
`web.threads` x `web.connection_limit` settings.

    python bench/web.py
    python bench/web.py --processes 1 2 --rounds 10
    python bench/web.py --threads 2 8 --limits 32 100
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/select.py would shadow the standard `select` module (asyncio needs it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(Path(__file__).resolve().parent))  # last: only for machine.py

import argparse  # noqa: E402
import itertools  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import selectors  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import psutil  # noqa: E402
from machine import describe  # noqa: E402

from digest.config import Web, load_config  # noqa: E402
from digest.store import open_store  # noqa: E402
from digest.subscriber_import import import_subscribers  # noqa: E402
from digest.tokens import make_token  # noqa: E402

SECRET = "bench-secret-0123456789"
CONCURRENCY = 200
BODY = b"List-Unsubscribe=One-Click"
TIMEOUT = 60.0  # seconds for any one request, and for the server to start or stop


def _project(folder: Path, threads: int, connection_limit: int, processes: int = 1) -> Path:
    text = (ROOT / "digest.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^store: .*$", "store: sqlite:///digest.db", text)
    text = re.sub(r"(?m)^web:\n", "", text)
    text += (f"\nweb:\n  threads: {threads}\n  connection_limit: {connection_limit}\n"
             f"  processes: {processes}\n")  # fmt: skip
    (folder / "digest.yaml").write_text(text, encoding="utf-8")
    return folder / "digest.yaml"


def _fill(config_path: Path, n: int) -> list[int]:
    """N subscribers through the real import; their ids."""
    lines = ["email,name,topics"] + [f"reader{i}@example.org,Reader {i},tech" for i in range(n)]
    csv_path = config_path.parent / "readers.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = load_config(config_path)
    store = open_store(config.store_url)
    import_subscribers(config, store, [csv_path], now=datetime.now(UTC))
    ids = [s.id for s in store.subscribers.iter_all() if s.id is not None]
    store.close()
    return ids


def _serve(config_path: Path, *, plain: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """`digest serve` (or, `plain`, the reference server) on a free port: process, URL."""
    # Output goes to a file: a pipe nobody reads fills up with waitress's queue-depth
    # warnings and then stalls the server on its next log line.
    log = config_path.parent / "serve.log"
    command = (
        [sys.executable, __file__, "--plain-server", str(config_path)]
        if plain
        else [sys.executable, "-m", "digest", "--config", str(config_path), "serve", "--port", "0"]
    )
    with log.open("wb") as out:
        env = {**os.environ, "DIGEST_SECRET": SECRET}
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + TIMEOUT
    found = None
    while found is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        found = re.search(r"http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
    if not found:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
        raise SystemExit(f"the server did not start: {log.read_text(errors='replace')!r}")
    base = found.group(0)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=TIMEOUT)
    raise SystemExit("the server never answered /healthz")


def _plain_server(config_path: Path) -> None:
    """The reference: digest's Flask app under waitress with waitress's own defaults."""
    from waitress import create_server

    from digest.web import create_app

    config = load_config(config_path)
    server = create_server(create_app(config, open_store(config.store_url)), port=0)
    print(f"serving on http://127.0.0.1:{server.effective_port}", flush=True)
    server.run()


def _request(token: str) -> bytes:
    return (
        f"POST /u/{token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n".encode()
        + BODY
    )


def _burst(port: int, requests: list[bytes]) -> list[tuple[float, int]]:
    """All `requests` at once, each on its own connection: (seconds to the whole answer,
    status; 0 for no answer) for each, in one thread on non-blocking sockets."""
    selector = selectors.DefaultSelector()
    results: list[tuple[float, int]] = [(0.0, 0)] * len(requests)
    answers: list[list[bytes]] = [[] for _ in requests]
    starts = [0.0] * len(requests)
    for i, _ in enumerate(requests):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        starts[i] = time.perf_counter()
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE, i)
    left = len(requests)
    deadline = time.monotonic() + TIMEOUT
    while left and time.monotonic() < deadline:
        for key, events in selector.select(1.0):
            sock, i = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            try:
                if events & selectors.EVENT_WRITE:
                    sock.send(requests[i])  # a few hundred bytes: the send buffer takes them
                    selector.modify(sock, selectors.EVENT_READ, i)
                    continue
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                answers[i].append(chunk)
                continue
            answer = b"".join(answers[i])
            status = int(answer[9:12]) if answer.startswith(b"HTTP/1.1 ") else 0
            results[i] = (time.perf_counter() - starts[i], status)
            selector.unregister(sock)
            sock.close()
            left -= 1
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()
    return results


def _rounds(port: int, tokens: list[str]) -> tuple[list[float], int, float]:
    """Rounds of CONCURRENCY simultaneous POSTs; latencies, failures, wall seconds."""
    requests = [_request(t) for t in tokens]
    latencies: list[float] = []
    failed = 0
    start = time.perf_counter()
    for first in range(0, len(requests), CONCURRENCY):
        for seconds, status in _burst(port, requests[first : first + CONCURRENCY]):
            if status == 200:
                latencies.append(seconds)
            else:
                failed += 1
    return latencies, failed, time.perf_counter() - start


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def _cpu(server: psutil.Process) -> float:
    """CPU seconds of the server and of the processes it forked."""
    total = 0.0
    for proc in [server, *server.children(recursive=True)]:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def _measure(
    label: str,
    threads: int,
    limit: int,
    rounds: int,
    subscribers: int,
    processes: int = 1,
    *,
    plain: bool = False,
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="digest-bench-web-"))
    try:
        config_path = _project(folder, threads, limit, processes)
        ids = _fill(config_path, subscribers)
        tokens = [make_token(SECRET, "unsubscribe", i, e="weekly/2026-W48") for i in ids]
        tokens = tokens[: rounds * CONCURRENCY]
        proc, base = _serve(config_path, plain=plain)
        try:
            port = int(base.rsplit(":", 1)[1])
            server, client = psutil.Process(proc.pid), psutil.Process()
            before, client_before = _cpu(server), sum(client.cpu_times()[:2])
            latencies, failed, seconds = _rounds(port, tokens)
            after, client_after = _cpu(server), sum(client.cpu_times()[:2])
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=TIMEOUT)
        store = open_store(load_config(config_path).store_url)
        unsubscribed = store.subscribers.count(status="unsubscribed")
        store.close()
        per_post = 1000 / len(tokens)
        print(f"{label:<52} {len(latencies) / seconds:5.0f} req/s  "
              f"p50 {_percentile(latencies, 50) * 1000:4.0f} ms  "
              f"p99 {_percentile(latencies, 99) * 1000:4.0f} ms  "
              f"CPU/POST server {(after - before) * per_post:4.2f} ms "
              f"client {(client_after - client_before) * per_post:4.2f} ms  "
              f"load {os.getloadavg()[0]:4.1f}  failed {failed}  "
              f"done {unsubscribed}/{len(tokens)}", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="*", default=[], help="other web.threads")
    parser.add_argument(
        "--limits", type=int, nargs="*", default=[], help="other web.connection_limit"
    )
    parser.add_argument(
        "--processes", type=int, nargs="*", default=[2], help="web.processes to add (default 2)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="bursts of 200 POSTs each")
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--plain-server", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        _plain_server(args.plain_server)
        return
    if args.rounds * CONCURRENCY > args.subscribers:
        parser.error("need at least rounds x 200 subscribers (one token each)")
    print(f"machine: {describe()}", flush=True)
    print(f"{args.rounds} bursts of {CONCURRENCY} concurrent one-click POSTs per line; "
          "client: one thread, non-blocking sockets on epoll", flush=True)  # fmt: skip
    _measure("reference: waitress defaults, same app", 4, 100, args.rounds, args.subscribers,
             plain=True)  # fmt: skip
    default = Web()
    settings = [(default.threads, default.connection_limit)] + [
        (t, c)
        for t, c in itertools.product(
            args.threads or [default.threads], args.limits or [default.connection_limit]
        )
        if (t, c) != (default.threads, default.connection_limit)
    ]
    for threads, limit in settings:
        mark = " (defaults)" if (threads, limit) == settings[0] else ""
        _measure(f"digest serve: threads {threads}, connections {limit}{mark}",
                 threads, limit, args.rounds, args.subscribers)  # fmt: skip
    for processes in args.processes:
        if processes != 1:
            _measure(f"digest serve: web.processes {processes}",
                     default.threads, default.connection_limit, args.rounds, args.subscribers,
                     processes)  # fmt: skip
    print(f"machine at the end: load {'{:.2f} {:.2f} {:.2f}'.format(*os.getloadavg())}")


if __name__ == "__main__":
    main()
