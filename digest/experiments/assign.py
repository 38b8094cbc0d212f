"""Deterministic assignment: a keyed hash of (experiment, subscriber) picks test or rest, and
the variant within the test, so a resume or a resend never moves anyone.

A subscriber's hash is a number u in [0, 1). The test takes u < test_share, cut into equal
slices, one per variant; the rest of the list (u ≥ test_share) waits for the winner. A
hash is uniform, so on a large list each slice holds its share within a fraction of a per
cent (a 50/50 split of 100,000 is off by about 0.2 % at three standard deviations).

Rows of the rest carry the variant they received with REST_SUFFIX (`B:rest`), so the
test's figures never mix with the winner's send, while both share one rendering.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import lru_cache

from digest import compose
from digest.config import Config
from digest.editions import Edition

REST_SUFFIX = ":rest"
DEFAULT_VARIANT = "A"  # the one variant of a digest without an experiment

Assign = Callable[[int, Sequence[str]], tuple[str, str] | None]


def position(seed: str, edition_key: str, subscriber_id: int) -> float:
    """The subscriber's place in [0, 1) for this edition's experiment; keyed BLAKE2b."""
    return positions(seed, edition_key)(subscriber_id)


def positions(seed: str, edition_key: str) -> Callable[[int], float]:
    """`position` for one edition, the key and the edition's prefix hashed once."""
    start = hashlib.blake2b(f"{edition_key}:".encode(), key=seed.encode()[:64], digest_size=8)

    def place(subscriber_id: int) -> float:
        hashed = start.copy()
        hashed.update(b"%d" % subscriber_id)
        return int.from_bytes(hashed.digest(), "big") / 2**64

    return place


def variant_for(u: float, keys: Sequence[str], test_share: float) -> str | None:
    """The variant of the test slice holding `u`, or None when `u` is in the rest."""
    if u >= test_share:
        return None
    return keys[min(int(u / test_share * len(keys)), len(keys) - 1)]


def seed_of(config: Config, digest_key: str) -> str:
    experiment = config.digest(digest_key).experiment
    return (experiment.seed if experiment and experiment.seed else None) or digest_key


def edition_assigner(config: Config, edition: Edition) -> Assign:
    """Who is planned by a send of the edition: the test group, each with their variant;
    the whole audience as variant A when the digest has no experiment."""
    experiment = config.digest(edition.digest).experiment
    planned = _planner(edition.topics())
    if experiment is None:
        return lambda _id, mine: planned(tuple(mine), DEFAULT_VARIANT, DEFAULT_VARIANT)
    keys = [v.key for v in experiment.variants]
    place, share = positions(seed_of(config, edition.digest), edition.key), experiment.test_share

    def assign(subscriber_id: int, mine: Sequence[str]) -> tuple[str, str] | None:
        variant = variant_for(place(subscriber_id), keys, share)
        return None if variant is None else planned(tuple(mine), variant, variant)

    return assign


def variants_of(config: Config, edition: Edition) -> list[str]:
    """The variants a send of the edition may render (DEFAULT_VARIANT without a test)."""
    experiment = config.digest(edition.digest).experiment
    return [v.key for v in experiment.variants] if experiment else [DEFAULT_VARIANT]


def rest_assigner(edition: Edition, variant: str) -> Assign:
    """Everyone not planned yet gets `variant`, marked as the rest of the list."""
    planned = _planner(edition.topics())
    return lambda _id, mine: planned(tuple(mine), variant, variant + REST_SUFFIX)


def is_test_row(variant: str) -> bool:
    return not variant.endswith(REST_SUFFIX)


PlannedRow = Callable[[tuple[str, ...], str, str], tuple[str, str] | None]


def _planner(topics: Sequence[str]) -> PlannedRow:
    """(subscriber's topics, variant rendered, variant stored) -> (content key, stored
    variant), None when no topic is shared; kept per topic list, since a list of a million
    holds a few hundred distinct ones."""

    @lru_cache(maxsize=10_000)
    def planned(mine: tuple[str, ...], rendering: str, stored: str) -> tuple[str, str] | None:
        key = compose.content_key(mine, topics, rendering)
        return (key, stored) if key else None

    return planned
