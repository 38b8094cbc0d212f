"""`digest serve` as a child process on a loopback port, raw POSTs to it, and the rows
the tests read back."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conftest import SECRET
from sqlalchemy import select

from digest.store import Store
from digest.store.schema import subscribers
from digest.subscriber import Subscriber

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ONE_CLICK = b"List-Unsubscribe=One-Click"


@contextmanager
def serving(
    project: Path, processes: int = 1, write_wait: float = 10.0
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`digest serve` on a free loopback port, on the project's store: (port, process)."""
    config = project / "digest.yaml"
    web = f"web:\n  threads: 4\n  processes: {processes}\n  write_wait: {write_wait}\n"
    config.write_text(config.read_text() + "\n" + web)
    log = project / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(config), "serve", "--port", "0"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "DIGEST_SECRET": SECRET},
        )  # fmt: skip
    try:
        found = None
        deadline = time.monotonic() + 30
        while found is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            found = re.search(r"http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        assert found, log.read_text(errors="replace")
        yield int(found.group(1)), proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def post(port: int, path: str, body: bytes = ONE_CLICK) -> bytes:
    """One POST on its own connection, as a mail provider sends it; the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def readers(store: Store, n: int) -> list[Subscriber]:
    return [
        store.subscribers.add(
            Subscriber(email=f"reader{i}@example.org", name=f"Reader {i}", topics=("tech",)),
            now=NOW,
        )
        for i in range(n)
    ]


def rows(store: Store) -> dict[int, tuple[str, str, datetime]]:
    with store.engine.connect() as conn:
        found = conn.execute(
            select(
                subscribers.c.id,
                subscribers.c.status,
                subscribers.c.status_reason,
                subscribers.c.updated_at,
            )
        ).all()
    return {r.id: (r.status, r.status_reason, r.updated_at) for r in found}
