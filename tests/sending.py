"""Fixtures and helpers shared by the send tests: a stored edition, readers, a fake sleep."""

from __future__ import annotations

import email
import email.policy
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from editions import make_edition
from fake_sendgrid import FakeSendGrid

from digest import send as sending
from digest.compose import Row
from digest.config import Config
from digest.editions import Edition
from digest.store import Store
from digest.subscriber import Subscriber
from digest.transports import make_transport
from digest.transports.base import Transport

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SECRET = "test-secret-0123456789"
KEY = "weekly/2026-W48"
EDITION_TOPICS = ("politics", "tech", "economy")


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    """The fake SendGrid, its clock (for send_at limits) at the tests' NOW."""
    with FakeSendGrid(now=lambda: NOW) as fake:
        yield fake


@pytest.fixture
def edition(store: Store) -> Edition:
    e = make_edition(2, EDITION_TOPICS, status="approved")
    store.editions.save(e)
    return e


def _add(
    store: Store,
    n: int,
    *,
    topics: tuple[str, ...] = ("politics",),
    status: str = "active",
    start: int = 0,
) -> list[Subscriber]:
    return [
        store.subscribers.add(
            Subscriber(
                email=f"reader{i}@example.org", name=f"Reader {i}", topics=topics, status=status
            ),
            now=NOW,
        )
        for i in range(start, start + n)
    ]


class Sleeps:
    """Records the waits the send loop asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _send(
    config: Config,
    store: Store,
    edition: Edition,
    transport: Transport,
    *,
    sleep: Callable[[float], None] | None = None,
    progress: sending.Progress | None = None,
    render: Any = None,
    **options: Any,
) -> sending.SendSummary:
    opts = sending.SendOptions(**{"batch_size": 5, **options})
    return sending.send_edition(
        edition,
        config=config,
        ledger=store.deliveries,
        transport=transport,
        secret=SECRET,
        now=lambda: NOW,
        options=opts,
        render=render,
        sleep=sleep or Sleeps(),
        rng=random.Random(7),
        progress=progress,
    )


def _claim(store: Store, n: int, **provider: Any) -> list[Row]:
    """Claim up to `n` pending rows as a send does right before its provider call."""
    rows = store.deliveries.pending(KEY, "politics|A", n)
    claimed, gone = store.deliveries.claim(
        KEY, [r.id for r in rows], now=NOW, **{"batch_id": None, "scheduled_at": None, **provider}
    )
    assert (len(claimed), gone) == (len(rows), 0)
    return rows


def _outbox(config: Config) -> Transport:
    return make_transport("outbox", config, edition_key=KEY, now=lambda: NOW)


def _emls(config: Config) -> list[email.message.EmailMessage]:
    folder = config.resolve(config.delivery.outbox_dir) / KEY
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(folder.rglob("*.eml"))
    ]


def sendgrid_config(
    config: Config,
    fake: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
    *,
    timeout: float = 5.0,
    **delivery: Any,
) -> Config:
    """`config` sending through `fake` (its key in the environment), with a client timeout."""
    monkeypatch.setenv("SENDGRID_API_KEY", fake.api_key)
    sg = config.delivery.sendgrid.model_copy(update={"host": fake.url, "timeout": timeout})
    return config.model_copy(
        update={"delivery": config.delivery.model_copy(update={"sendgrid": sg, **delivery})}
    )
