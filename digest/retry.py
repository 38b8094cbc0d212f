"""Calling a transport and trying again: exponential backoff with full jitter, within a budget.

Full jitter (a uniform wait between 0 and the exponential cap) spreads the retries of many
senders hit by the same rate limit; a provider's Retry-After is a floor, never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from digest.errors import TransportError
from digest.transports.base import OutgoingEmail, SendResult, Transport

BASE_SECONDS = 1.0
CAP_SECONDS = 60.0


class Uniform(Protocol):
    """The part of `random.Random` the backoff uses; tests pass a seeded one."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries a batch gets and how long, in total, it may wait between them."""

    max_attempts: int
    max_wait: float
    base: float = BASE_SECONDS
    cap: float = CAP_SECONDS

    def delay(self, attempt: int, retry_after: float | None, rng: Uniform) -> float:
        """Seconds to wait before try number `attempt + 1` (attempt counts from 1)."""
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        wait = rng.uniform(0.0, ceiling)
        return max(wait, retry_after or 0.0)

    def next_wait(
        self, attempt: int, waited: float, retry_after: float | None, rng: Uniform
    ) -> float | None:
        """The wait before the next try, or None when the tries or the wait budget are spent."""
        if attempt >= self.max_attempts:
            return None
        wait = self.delay(attempt, retry_after, rng)
        if waited + wait > self.max_wait:
            return None
        return wait


def call_transport(transport: Transport, email: OutgoingEmail) -> list[SendResult]:
    """The transport's per-recipient results; a whole-call error applies to every recipient."""
    recipients = email.recipients
    try:
        results = transport.send(email)
    except TransportError as exc:
        return [
            SendResult(
                delivery_id=r.delivery_id,
                ok=False,
                error=exc.message,
                retryable=exc.retryable,
                in_doubt=exc.in_doubt,
                fatal=exc.fatal,
            )
            for r in recipients
        ]
    asked = {r.delivery_id for r in recipients}
    answered = {r.delivery_id for r in results}
    if len(results) == len(asked) and answered == asked:
        return results  # the usual answer: one result per recipient
    # a recipient the transport forgot is treated as a fault worth retrying, never as sent
    missing = [
        SendResult(
            delivery_id=r.delivery_id,
            ok=False,
            error=f"{transport.name}: no result",
            retryable=True,
        )
        for r in recipients
        if r.delivery_id not in answered
    ]
    return [r for r in results if r.delivery_id in asked] + missing
