"""digest.yaml's `digests`: each digest, its schedule and its A/B experiment."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator

from digest.config.base import (
    Key,
    Model,
    check_key,
    check_timezone,
    no_repeats,
    parse_duration,
    wait_seconds,
)

VARIANT_KEY = re.compile(r"^[A-Za-z0-9_]{1,16}$")
_SUBJECT_FIELDS = {"site": "S", "name": "N", "start": date(2026, 1, 5), "end": date(2026, 1, 11),
                   "week": "2026-W02"}  # fmt: skip


def _check_subject(pattern: str) -> str:
    try:
        pattern.format(**_SUBJECT_FIELDS)
    except KeyError as exc:
        raise ValueError(
            f"unknown field {{{exc.args[0]}}} (known: {', '.join(_SUBJECT_FIELDS)})"
        ) from None
    except (ValueError, IndexError) as exc:
        raise ValueError(f"invalid pattern: {exc}") from None
    return pattern


class Variant(Model):
    key: str = Field(description="Short name shown in reports and sent as a custom arg, e.g. `A`.")
    template: str | None = Field(None, description="Template name; default the digest's.")
    subject: str | None = Field(None, description="Subject pattern; default the digest's.")
    preheader: str | None = Field(None, description="Inbox preheader; default the first titles.")
    sender_name: str | None = Field(None, description="From display name; default sender.name.")

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not VARIANT_KEY.match(v):
            raise ValueError("use 1 to 16 letters, digits or '_'")
        return v

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str | None) -> str | None:
        return None if v is None else _check_subject(v)


class Experiment(Model):
    variants: list[Variant] = Field(
        min_length=2, max_length=4, description="2 to 4 variants to compare."
    )
    test_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of the list in the test, split evenly; the winner goes to the rest.",
    )
    wait: str = Field("4h", description="Test length before the decision, e.g. `90m`, `4h`, `1d`.")
    metric: Literal["clicks", "human_opens", "opens", "click_to_open"] = Field(
        "clicks",
        description="What decides: clicks, human_opens (no machine opens), opens, click_to_open.",
    )
    min_sample: int = Field(1000, ge=1, description="Least denominator per variant for a verdict.")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Significance level (two-sided).")
    default: str | None = Field(
        None, description="Variant sent to the rest when no winner; default the first."
    )
    seed: str | None = Field(
        None, description="Key of the assignment hash; default the digest key."
    )

    @field_validator("wait")
    @classmethod
    def _wait(cls, v: str) -> str:
        wait_seconds(v)
        return v

    @model_validator(mode="after")
    def _variants(self) -> Experiment:
        no_repeats([v.key for v in self.variants], "variants", "key")
        keys = [v.key for v in self.variants]
        if self.default is not None and self.default not in keys:
            known = ", ".join(keys)
            raise ValueError(f"default: {self.default!r} is not a variant (known: {known})")
        return self

    @property
    def default_variant(self) -> str:
        return self.default or self.variants[0].key

    @property
    def wait_seconds(self) -> int:
        return wait_seconds(self.wait)

    def variant(self, key: str) -> Variant | None:
        return next((v for v in self.variants if v.key == key), None)


class Schedule(Model):
    cron: str | None = Field(
        None,
        description="When the digest is sent, as a 5-field cron expression in `timezone` "
        "(e.g. `0 7 * * MON`); none: only sent by hand.",
    )
    timezone: str | None = Field(
        None, description="Time zone of the cron expression; default the digest's."
    )
    build_lead: str = Field(
        "2h", description="How long before the send the edition is built and test-sent."
    )
    require_approval: bool = Field(
        True, description="Send only editions an editor approved (`digest edition approve`)."
    )
    test_to: list[str] = Field(
        default_factory=list, description="Addresses that get the test send when it is built."
    )
    local_time: bool = Field(
        False,
        description="Deliver at the cron's time of day in each subscriber's own time zone "
        "instead of one moment for everyone.",
    )
    grace: str = Field(
        "1h", description="How late a missed send is still caught up; later ones are skipped."
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return None
        from cronsim import CronSim, CronSimError

        if len(v.split()) != 5:
            raise ValueError(f"cron {v!r}: use 5 fields (minute hour day month weekday)")
        try:
            CronSim(v, datetime(2026, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ValueError(f"cron {v!r}: {exc}") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None else check_timezone(v)

    @field_validator("build_lead", "grace")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("test_to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        from digest.subscribers import normalize_email  # it imports this module

        return [normalize_email(a) for a in v]

    @property
    def lead(self) -> timedelta:
        return parse_duration(self.build_lead)

    @property
    def grace_period(self) -> timedelta:
        return parse_duration(self.grace)


class Digest(Model):
    key: Key = Field(description="Identifier used on the command line, e.g. `weekly`.")
    name: str = Field(description="Display name.")
    template: str = Field(
        "weekly", description="Template name: templates/NAME.mjml and templates/NAME.txt."
    )
    subject: str = Field(
        "{site} — {name}, {start:%b %-d}–{end:%b %-d}",
        description="Subject pattern; fields: site, name, start, end, week.",
    )
    topics: list[str] = Field(description="Topic keys, in section order.")
    per_topic: int = Field(3, ge=1, le=50, description="Most articles per topic.")
    max_articles: int = Field(15, ge=1, le=200, description="Most articles per edition.")
    timezone: str | None = Field(None, description="Time zone of the week; default site's.")
    utm_campaign: str | None = Field(None, description="utm_campaign; default `KEY-WEEK`.")
    experiment: Experiment | None = Field(None, description="An A/B test of this digest.")
    archive: Literal["public", "unlisted", "off"] = Field(
        "public",
        description="Web archive: public (listed, in the feed), unlisted (edition pages by "
        "link only), off (no pages, no view-in-browser link).",
    )
    cadence: Literal["weekly", "daily", "monthly"] = Field(
        "weekly",
        description="What one edition covers: an ISO week (`--week`), a date (`--date`) "
        "or a month (`--month`).",
    )
    min_articles: int = Field(
        1, ge=1, le=200, description="Fewer articles than this: the edition is skipped."
    )
    schedule: Schedule = Field(default_factory=Schedule)  # type: ignore[arg-type]

    _k = field_validator("key")(classmethod(lambda cls, v: check_key(v)))

    @field_validator("archive", mode="before")
    @classmethod
    def _off(cls, v: object) -> object:
        return "off" if v is False else v  # YAML reads a bare `off` as false

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None else check_timezone(v)
