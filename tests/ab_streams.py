"""Synthetic SendGrid event streams of known rates for A/B tests, with the truth they encode.

    stream = make_stream(rows, edition_key, rates={"A": (0.3, 0.05), "B": (0.3, 0.08)}, seed=1)
    stream.events  # list of SendGrid event dicts, in a shuffled order
    stream.truth   # {"A": {"recipients": …, "delivered": …, …}, …}

The noise a real stream carries is in it: every row may get several opens and clicks,
machine opens (Apple Mail Privacy Protection), the same event twice (SendGrid's retries),
events with no custom args but SendGrid's message id, and bounces, unsubscribes and spam
reports. `foreign_events` adds what must not count: other editions' events for the same
people, and events that carry nothing but an address.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

BASE_TS = int(datetime(2026, 11, 30, 8, 1, tzinfo=UTC).timestamp())  # after the send
FIELDS = ("recipients", "delivered", "unique_opens", "unique_human_opens", "unique_clicks",
          "unsubscribes", "complaints", "bounces")  # fmt: skip


@dataclass(frozen=True)
class SentRow:
    id: int
    subscriber_id: int
    email: str
    variant: str
    message_id: str


@dataclass
class Stream:
    edition_key: str
    events: list[dict[str, Any]] = field(default_factory=list)
    truth: dict[str, dict[str, int]] = field(default_factory=dict)
    _n: int = 0

    def add(self, rng: random.Random, row: SentRow, kind: str, tagged: bool, **extra: Any) -> None:
        self._n += 1
        event: dict[str, Any] = {
            "email": row.email,
            "timestamp": BASE_TS + self._n,
            "event": kind,
            "sg_event_id": f"ev-{row.id}-{self._n}",
            "sg_message_id": f"{row.message_id}.filter0001.{self._n}.0",
            **extra,
        }
        if tagged:
            event.update(delivery_id=str(row.id), edition=self.edition_key, variant=row.variant,
                         subscriber_id=str(row.subscriber_id))  # fmt: skip
        self.events.append(event)
        if rng.random() < 0.1:  # SendGrid delivers the same event again
            self.events.append(dict(event))


def make_stream(
    rows: Iterable[SentRow],
    edition_key: str,
    *,
    rates: Mapping[str, tuple[float, float]],  # variant -> (human open rate, click rate)
    seed: int,
    machine_share: float = 0.35,
    untagged_share: float = 0.1,
) -> Stream:
    rng = random.Random(seed)
    stream = Stream(edition_key, truth={v: dict.fromkeys(FIELDS, 0) for v in rates})
    for row in rows:
        t = stream.truth[row.variant]
        t["recipients"] += 1
        tagged = rng.random() >= untagged_share
        if rng.random() < 0.03:
            stream.add(rng, row, "bounce", tagged, type="bounce", reason="550 no such user")
            t["bounces"] += 1
            continue
        stream.add(rng, row, "processed", tagged)
        stream.add(rng, row, "delivered", tagged)
        t["delivered"] += 1
        human_rate, click_rate = rates[row.variant]
        machine = rng.random() < machine_share
        human = rng.random() < human_rate
        clicked = rng.random() < click_rate
        if machine:
            stream.add(rng, row, "open", tagged, sg_machine_open=True)
        if human:
            for _ in range(rng.randint(1, 3)):
                stream.add(rng, row, "open", tagged, sg_machine_open=False)
        if clicked:
            for _ in range(rng.randint(1, 2)):
                stream.add(rng, row, "click", tagged, url="https://news.example.com/a")
        t["unique_opens"] += machine or human
        t["unique_human_opens"] += human
        t["unique_clicks"] += clicked
        if rng.random() < 0.01:
            stream.add(rng, row, "unsubscribe", tagged)
            t["unsubscribes"] += 1
        if rng.random() < 0.004:
            stream.add(rng, row, "spamreport", tagged)
            t["complaints"] += 1
    rng.shuffle(stream.events)
    return stream


def foreign_events(rows: Iterable[SentRow], other_edition: str, other_ids: Mapping[str, int]
                   ) -> list[dict[str, Any]]:  # fmt: skip
    """For each person: opens and clicks of another edition (tagged with its row), an event
    claiming this edition's row but naming the other edition, and an address-only click."""
    out: list[dict[str, Any]] = []
    for n, row in enumerate(rows):
        base = {"email": row.email, "timestamp": BASE_TS + 10_000 + n}
        other = {"delivery_id": str(other_ids[row.email]), "edition": other_edition,
                 "variant": "A", "subscriber_id": str(row.subscriber_id)}  # fmt: skip
        out.append({**base, **other, "event": "click", "sg_event_id": f"x-c-{n}"})
        out.append({**base, **other, "event": "open", "sg_event_id": f"x-o-{n}"})
        out.append({**base, "event": "click", "sg_event_id": f"x-m-{n}",
                    "delivery_id": str(row.id), "edition": other_edition})  # fmt: skip
        out.append({**base, "event": "click", "sg_event_id": f"x-e-{n}"})
    return out
