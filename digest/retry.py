"""When to try a provider call again: exponential backoff with full jitter, within a budget.

Full jitter (a uniform wait between 0 and the exponential cap) spreads the retries of many
senders hit by the same rate limit; a provider's Retry-After is a floor, never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
