"""Real `digest` processes: two `run-due` started at once send the edition once; a
`scheduler` stopped by SIGTERM mid-send leaves the ledger consistent, and the next run
finishes the send with no one served twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import SECRET, Run
from fake_sendgrid import FakeSendGrid

from digest.store import Store
from digest.subscribers import Subscriber

MONDAY = "2026-11-30T07:00:00+00:00"  # the sample weekly digest's send time for W48
KEY = "weekly/2026-W48"
EDITORS = "editors@digest.example.com"  # the schedule's test send goes there
TIMEOUT = 60.0


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        yield fake


@pytest.fixture
def approved(run: Run, project: Path, store: Store, sendgrid: FakeSendGrid) -> Path:
    """The sample W48 edition, approved, the project pointed at the fake SendGrid."""
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["delivery"]["sendgrid"]["host"] = sendgrid.url
    data["delivery"]["batch_size"] = 5
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    run("ingest")
    run("--now", MONDAY, "build", "weekly", "--week", "2026-W48")
    run("--now", MONDAY, "edition", "approve", "weekly", "--week", "2026-W48")
    return project


def _digest(project: Path, *args: str) -> list[str]:
    code = "import sys; from digest.cli import main; sys.argv[0] = 'digest'; main()"
    return [sys.executable, "-c", code, "--config", str(project / "digest.yaml"), *args]


def _env(fake: FakeSendGrid) -> dict[str, str]:
    return {**os.environ, "SENDGRID_API_KEY": fake.api_key, "DIGEST_SECRET": SECRET}


def _readers(fake: FakeSendGrid) -> Counter[str]:
    return Counter(a for a in fake.delivered() if a != EDITORS)


def _add(store: Store, n: int) -> None:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(n):
        store.subscribers.add(Subscriber(email=f"r{i}@example.org", topics=("politics",)), now=now)


def test_two_run_due_started_at_once_send_the_edition_once(
    approved: Path, store: Store, sendgrid: FakeSendGrid
) -> None:
    _add(store, 30)
    sendgrid.set_latency(0.05)
    args = ("run-due", "--now", MONDAY, "--transport", "sendgrid")
    procs = [
        subprocess.Popen(
            _digest(approved, *args),
            env=_env(sendgrid),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]  # fmt: skip
    assert [p.returncode for p in procs] == [0, 0], outs
    readers = _readers(sendgrid)
    assert len(readers) == 30 and set(readers.values()) == {1}
    assert Counter(a for a in sendgrid.delivered() if a == EDITORS) == {EDITORS: 1}
    assert store.deliveries.counts(KEY)["sent"] == 30
    assert store.schedules.state(KEY) == "sent"


def test_sigterm_stops_the_scheduler_mid_send_and_the_next_run_finishes_it(
    approved: Path, store: Store, sendgrid: FakeSendGrid
) -> None:
    _add(store, 100)
    sendgrid.set_latency(0.1)  # 20 batches of 5: about 2 s of sending
    proc = subprocess.Popen(
        _digest(approved, "scheduler", "--now", MONDAY, "--transport", "sendgrid"),
        env=_env(sendgrid), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(sendgrid.requests) < 4 and time.monotonic() < deadline:  # the send is on
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "scheduler stopped" in err, err
    counts = store.deliveries.counts(KEY)
    readers = _readers(sendgrid)
    assert counts["sending"] == 0 and counts["failed"] == 0  # nothing left in doubt
    assert counts["sent"] == len(readers) and 0 < counts["sent"] < 100  # stopped part way
    assert store.schedules.state(KEY) == "sending"
    finish = subprocess.run(_digest(approved, "run-due", "--now", MONDAY, "--transport",
                                    "sendgrid"), env=_env(sendgrid), capture_output=True,
                            text=True, timeout=TIMEOUT)  # fmt: skip
    assert finish.returncode == 0, finish.stderr
    readers = _readers(sendgrid)
    assert len(readers) == 100 and set(readers.values()) == {1}
    assert store.schedules.state(KEY) == "sent"
