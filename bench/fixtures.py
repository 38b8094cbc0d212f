"""What the sending benchmarks share: the fake SendGrid in a process of its own, a synthetic
audience, the edition they send, and the load line."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import random
import resource
import sys
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT), str(ROOT / "tests")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

TOPICS = ("politics", "tech", "economy", "climate", "culture", "health")  # 41 mixes of 1–3
ZONES = ("UTC", "Europe/London", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
SECRET = "bench-secret-0123456789"
CHILD_TIMEOUT = 1800  # seconds any child process may take to answer
INSERT_CHUNK = 10_000


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def fill_audience(url: str, n: int) -> None:
    """N active subscribers in the store at `url`, each with 1–3 of TOPICS and one of ZONES
    (in turn), drawn with a fixed seed."""
    from digest.store import open_store
    from digest.store.schema import subscribers

    store = open_store(url)
    now = datetime.now(UTC)
    rng = random.Random(42)
    rows = []
    with store.engine.begin() as db:
        for i in range(n):
            rows.append(
                {"email": f"reader{i}@example.org", "name": f"Reader {i}",
                 "topics": rng.sample(TOPICS, rng.randint(1, 3)), "timezone": ZONES[i % 5],
                 "locale": "en", "status": "active", "status_reason": "",
                 "consent_method": "import", "consent_source": "bench", "consent_ip": "",
                 "created_at": now, "updated_at": now}
            )  # fmt: skip
            if len(rows) == INSERT_CHUNK:
                db.execute(subscribers.insert(), rows)
                rows = []
        if rows:
            db.execute(subscribers.insert(), rows)
    store.close()


def edition(period: str = "2026-W48") -> Any:
    """The approved weekly edition the benchmarks send: two articles in each of TOPICS."""
    from editions import make_edition

    return make_edition(2, TOPICS, period=period, status="approved")


def _serve(conn: Connection) -> None:
    from fake_sendgrid import SEND, FakeSendGrid

    with FakeSendGrid(keep_bodies=False, validate_every=50) as fake:
        conn.send((fake.url, fake.api_key))
        while conn.poll(CHILD_TIMEOUT):  # "count" any number of times, then "stop"
            if conn.recv() == "stop":
                return
            usage = resource.getrusage(resource.RUSAGE_SELF)
            requests = sum(1 for path, _status in fake.answers if path == SEND)
            conn.send((fake.accepted, requests, usage.ru_maxrss / 1024,
                       usage.ru_utime + usage.ru_stime))  # fmt: skip


class FakeProcess:
    """The fake SendGrid in a fresh process (it shares no GIL and no memory with the
    sender), keeping no request body and validating one request in 50."""

    def __enter__(self) -> FakeProcess:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        self.url, self.api_key = self._answer()
        return self

    def count(self) -> tuple[int, int, float, float]:
        """(recipients accepted, Mail Send requests, peak RSS MiB, CPU seconds) so far."""
        self._conn.send("count")
        return self._answer()  # type: ignore[no-any-return]

    def _answer(self) -> Any:
        if not self._conn.poll(CHILD_TIMEOUT):
            self._process.kill()
            raise SystemExit(f"the fake SendGrid gave no answer in {CHILD_TIMEOUT} s")
        return self._conn.recv()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
