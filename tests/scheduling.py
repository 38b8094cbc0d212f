"""Helpers for the schedule tests: a clock the test moves, digests written into digest.yaml,
articles for every day of a window, readers in given zones, and one `run-due` per tick."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from editions import make_article

from digest import runner
from digest.config import Config, load_config
from digest.editions import Edition
from digest.store import Store
from digest.subscribers import Subscriber
from digest.transports import make_transport
from digest.transports.base import Transport

SECRET = "test-secret-0123456789"


class Clock:
    """The time every part of a run reads; only the test moves it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def set(self, at: datetime) -> None:
        self.at = at


def digest(key: str, cadence: str = "weekly", topics: Sequence[str] = ("politics",),
           timezone: str | None = None, **schedule: Any) -> dict[str, Any]:  # fmt: skip
    """One digests[] entry with a schedule (cron and the other keys as given)."""
    entry: dict[str, Any] = {"key": key, "name": key.title(), "cadence": cadence,
                             "topics": list(topics), "schedule": schedule}  # fmt: skip
    if timezone:
        entry["timezone"] = timezone
    return entry


def write_config(project: Path, digests: list[dict[str, Any]], **delivery: Any) -> Config:
    """digest.yaml with these digests (and delivery settings), loaded."""
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["digests"] = digests
    data["delivery"].update(delivery)
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return load_config(path)


def add_articles(
    store: Store, start: datetime, end: datetime, topics: Sequence[str], every: timedelta
) -> int:
    """An article per topic every `every` from `start` to `end`."""
    items, at, n = [], start, 0
    while at < end:
        for topic in topics:
            url = f"https://news.example.com/{topic}/{at:%Y%m%d%H%M}"
            items.append(make_article(topic, n, url=url, published_at=at))
        at, n = at + every, n + 1
    store.articles.upsert(items, now=start)
    return len(items)


def add_readers(
    store: Store,
    zones: Sequence[str],
    *,
    topics: Sequence[str] = ("politics",),
    digests: Sequence[str] = (),
    prefix: str = "reader",
) -> list[Subscriber]:
    return [
        store.subscribers.add(
            Subscriber(
                email=f"{prefix}{i}@example.org",
                name=f"Reader {i}",
                topics=tuple(topics),
                digests=tuple(digests),
                timezone=zone,
            ),  # fmt: skip
            now=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for i, zone in enumerate(zones)
    ]


def make_runner(
    config: Config,
    store: Store,
    clock: Callable[[], datetime],
    *,
    transport: str = "outbox",
    **more: Any,
) -> runner.Runner:
    def make(edition: Edition) -> Transport:
        return make_transport(transport, config, edition_key=edition.key, now=clock)

    return runner.Runner(config=config, store=store, make_transport=make, secret=SECRET,
                         now=clock, sleep=lambda _s: None, **more)  # fmt: skip


def tick(config: Config, store: Store, clock: Clock, **more: Any) -> list[runner.Action]:
    """One `digest run-due` at the clock's time."""
    return runner.run_due(make_runner(config, store, clock, **more))


def steps(store: Store, digest: str) -> list[tuple[str, str, str]]:
    """(edition, step, outcome) of every recorded step of a digest, by due time."""
    return [(r.edition_key, r.step, r.outcome)
            for r in sorted(store.schedules.history(digest, limit=10_000),
                            key=lambda r: (r.due_at, r.step))]  # fmt: skip
