"""What experiments keep and read in the store, as plain data and protocols
(implemented by digest.store.experiments.ExperimentStore)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from digest.experiments.results import DeliveryFact, EventFact


@dataclass(frozen=True)
class Decision:
    """What the rest of the list gets, decided once per edition."""

    edition_key: str
    verdict: str  # the statistical verdict when it was taken
    winner: str | None  # the statistical winner then, if any
    variant: str  # sent to the rest: the winner, the default, or a person's pick
    decided_by: str  # "rule" (at the end of the wait) or "person" (digest ab pick)
    decided_at: datetime
    report: dict[str, Any]  # the report's JSON when it was taken


class ExperimentData(Protocol):
    """What a report reads."""

    def delivery_facts(self, edition_key: str) -> Iterable[DeliveryFact]: ...
    def event_facts(self, edition_key: str) -> Iterable[EventFact]: ...
    def decision(self, edition_key: str) -> Decision | None: ...


class ExperimentLedger(ExperimentData, Protocol):
    """What deciding needs beyond a report: the decision stored once (first one wins)."""

    def save_decision(self, decision: Decision) -> Decision: ...
