"""A real `digest send` process killed with SIGKILL at random moments, restarted each time:
strict mode ends with every subscriber receiving exactly one email; the default mode keeps
the damage to the batch in flight at each kill, and --retry-failed leaves no one out."""

from __future__ import annotations

import os
import random
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
from conftest import SECRET
from editions import make_edition
from fake_sendgrid import FakeSendGrid

from digest.store import Store
from digest.subscriber import Subscriber

KILLS = 5
BATCH = 5
AUDIENCE = 60
LATENCY = 0.1
RUN_TIMEOUT = 120.0
NOW = datetime(2026, 11, 30, 8, tzinfo=UTC)
WEEK = "2026-W48"
KEY = f"weekly/{WEEK}"


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        yield fake


@pytest.fixture
def crash_project(project: Path, store: Store, sendgrid: FakeSendGrid) -> list[str]:
    """The project pointed at the fake server, an edition, and its eligible audience."""
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["delivery"]["sendgrid"]["host"] = sendgrid.url
    data["delivery"]["batch_size"] = BATCH
    data["delivery"]["max_attempts"] = 2
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    store.editions.save(make_edition(2, ("politics", "tech")))
    eligible = []
    mixes = [("politics",), ("tech", "health"), ("culture",)]  # the last gets nothing
    for i in range(AUDIENCE):
        sub = Subscriber(email=f"reader{i}@example.org", topics=mixes[i % 3])
        store.subscribers.add(sub, now=NOW)
        if i % 3 != 2:
            eligible.append(sub.email)
    sendgrid.set_latency(LATENCY)
    return eligible


def _command(project: Path, *extra: str) -> list[str]:
    code = "import sys; from digest.cli import main; sys.argv[0] = 'digest'; main()"
    return [sys.executable, "-c", code, "--config", str(project / "digest.yaml"), "send", "weekly",
            "--week", WEEK, "--transport", "sendgrid", *extra]  # fmt: skip


def _env(fake: FakeSendGrid) -> dict[str, str]:
    return {**os.environ, "SENDGRID_API_KEY": fake.api_key, "DIGEST_SECRET": SECRET}


def _kill_mid_send(project: Path, fake: FakeSendGrid, rng: random.Random, *extra: str) -> None:
    """Start a send and SIGKILL it a random moment after the provider has seen new requests."""
    seen = len(fake.requests)
    proc = subprocess.Popen(
        _command(project, *extra), env=_env(fake), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        target = seen + rng.randint(1, 4)
        deadline = time.monotonic() + 30
        while len(fake.requests) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, LATENCY * 1.5))  # sometimes while the provider is answering
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)


def _finish(project: Path, fake: FakeSendGrid, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(project, *extra),
        env=_env(fake),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def test_strict_send_killed_five_times_delivers_each_subscriber_exactly_once(
    project: Path, store: Store, sendgrid: FakeSendGrid, crash_project: list[str]
) -> None:
    rng = random.Random(20261130)
    for _ in range(KILLS):
        _kill_mid_send(project, sendgrid, rng, "--strict")
    done = _finish(project, sendgrid, "--strict")
    assert done.returncode == 0, done.stdout + done.stderr
    delivered = Counter(sendgrid.delivered())
    assert sorted(delivered) == sorted(crash_project)  # nobody missing, nobody extra
    assert [a for a, n in delivered.items() if n > 1] == []  # nobody twice
    assert store.deliveries.counts(KEY)["sent"] == len(crash_project)
    assert sendgrid.cancelled  # some kill did land while a batch was in doubt


def test_default_send_killed_five_times_loses_at_most_the_batch_in_flight_per_kill(
    project: Path, store: Store, sendgrid: FakeSendGrid, crash_project: list[str]
) -> None:
    rng = random.Random(7)
    for _ in range(KILLS):
        _kill_mid_send(project, sendgrid, rng)
    done = _finish(project, sendgrid)
    in_doubt = store.deliveries.counts(KEY)["failed"]
    assert done.returncode == (3 if in_doubt else 0), done.stdout + done.stderr
    assert 0 < in_doubt <= KILLS * BATCH  # some kill landed mid-batch; never more than one each
    retried = _finish(project, sendgrid, "--retry-failed")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    delivered = Counter(sendgrid.delivered())
    assert set(delivered) == set(crash_project)  # nobody missing
    duplicates = sum(n - 1 for n in delivered.values())
    assert duplicates <= min(in_doubt, KILLS * BATCH)
