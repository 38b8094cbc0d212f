"""What every section of digest.yaml's models shares: frozen models refusing unknown keys,
keys, time zones, durations."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_key(value: str) -> str:
    if not _KEY.match(value):
        raise ValueError("use lowercase letters, digits, '-' or '_'")
    return value


Key = Annotated[str, Field(min_length=1, max_length=64)]


def check_timezone(value: str) -> str:
    """An IANA time zone name, or ValueError saying what to use instead."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)"
        ) from None
    return value


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: str) -> timedelta:
    """A duration written like `2h`, `30m`, `1d`, `1h30m` or `90s`; ValueError otherwise."""
    m = _DURATION.match(value.strip())
    if not value.strip() or not m:
        raise ValueError(f"duration {value!r}: write it like 2h, 30m, 1d or 1h30m")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def wait_seconds(value: str) -> int:
    """'90m', '4h', '2d' as seconds; ValueError saying the accepted form."""
    return int(parse_duration(value).total_seconds())


def no_repeats(values: list[str], where: str, field: str) -> None:
    seen: set[str] = set()
    for i, v in enumerate(values):
        if v in seen:
            raise ValueError(f"{where}[{i}].{field}: {v!r} appears twice")
        seen.add(v)
