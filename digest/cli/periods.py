"""`--week`, `--date` and `--month`: how every command names an edition's period."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from digest.periods import choose

HELP = (  # applied last to first, so --help lists them week, date, month
    ("month", "Month of a monthly digest's edition, e.g. 2026-11."),
    ("date", "Date of a daily digest's edition, e.g. 2026-11-25 (or a day in the week/month)."),
    ("week", "ISO week of a weekly digest's edition, e.g. 2026-W48."),
)


def period_options(required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add --week/--date/--month to a command; it receives one `period` argument (the value
    given, or None when `required` is false and none was given)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(*args: Any, week: str | None, date: str | None, month: str | None,
                    **kwargs: Any) -> Any:  # fmt: skip
            period = choose(week, date, month)
            if period is None and required:
                raise click.UsageError("give the edition's --week, --date or --month")
            return command(*args, period=period, **kwargs)

        more = "" if required else " Default: the current one in the digest's time zone."
        for name, text in HELP:
            wrapper = click.option(f"--{name}", metavar=name[0].upper(), help=text + more)(wrapper)
        return wrapper

    return decorate
