"""What sending needs of the delivery ledger, as a protocol: the core (send, batch,
cancel, workers, A/B winners) imports no store (digest.store.deliveries implements it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from digest.compose import Row
from digest.editions import Edition
from digest.transports.base import SendResult


class Ledger(Protocol):
    """The ledger operations sending needs (digest.store.deliveries.DeliveryStore)."""

    def holding(self, edition: Edition) -> AbstractContextManager[None]: ...
    def audience_topics(self) -> Iterator[tuple[str, ...]]: ...
    def plan(
        self,
        edition_key: str,
        assign: Callable[[int, Sequence[str]], tuple[str, str] | None],
        *,
        now: datetime,
        digest: tuple[str, bool] | None = None,
        moment: Callable[[str], datetime] | None = None,
    ) -> int: ...
    def audience_fixed(self, edition_key: str) -> bool: ...
    def fix_audience(self, edition_key: str, *, now: datetime) -> None: ...
    def stamp_send_after(
        self, edition_key: str, moment: Callable[[str], datetime], *, now: datetime
    ) -> int: ...
    def content_keys(self, edition_key: str, *, due: datetime | None = None) -> list[str]: ...
    def suppress_inactive(self, edition_key: str, *, now: datetime) -> int: ...
    def pending(
        self,
        edition_key: str,
        content_key: str,
        limit: int,
        *,
        after: int = 0,
        due: datetime | None = None,
    ) -> Sequence[Row]: ...
    def claim(
        self,
        edition_key: str,
        ids: Sequence[int],
        *,
        batch_id: str | None,
        scheduled_at: datetime | None,
        now: datetime,
    ) -> tuple[AbstractSet[int], int]: ...
    def record(
        self,
        results: Sequence[SendResult],
        *,
        batch_id: str | None,
        now: datetime,
    ) -> None: ...
    def release_ids(self, ids: Sequence[int], *, now: datetime) -> int: ...
    def in_doubt(self, edition_key: str) -> list[tuple[str | None, datetime | None, int]]: ...
    def release(self, edition_key: str, batch_id: str | None, *, now: datetime) -> int: ...
    def fail_in_doubt(
        self, edition_key: str, batch_id: str | None, reason: str, *, now: datetime
    ) -> int: ...
    def retry_failed(self, edition_key: str, *, now: datetime) -> int: ...
    def holds(self, *, now: datetime) -> list[datetime]: ...
    def add_hold(
        self, batch_id: str, edition_key: str, *, until: datetime, now: datetime
    ) -> None: ...
    def scheduled(self, edition_key: str, *, now: datetime) -> list[tuple[str, datetime]]: ...
    def counts(self, edition_key: str) -> dict[str, int]: ...
    def total(self, edition_key: str) -> int: ...
    def failures(self, edition_key: str) -> dict[str, int]: ...
