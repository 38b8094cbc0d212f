"""Load and validate digest.yaml into typed models; every error names file, key and reason."""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from digest.errors import ConfigError

DEFAULT_CONFIG = "digest.yaml"
SECRET_ENV = "DIGEST_SECRET"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # larger than any sane feed; stops a runaway response

_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_key(value: str) -> str:
    if not _KEY.match(value):
        raise ValueError("use lowercase letters, digits, '-' or '_'")
    return value


Key = Annotated[str, Field(min_length=1, max_length=64)]


class Sender(_Model):
    name: str = Field(description="Display name in the From header.")
    address: str = Field(description="From address.")
    reply_to: str | None = Field(None, description="Reply-To address; defaults to the sender.")


class Site(_Model):
    name: str = Field(description="Name of the publication, shown in headers and footers.")
    base_url: str = Field(description="Public URL of `digest serve`; links in emails point here.")
    postal_address: str = Field(description="Sender's postal address, printed in every footer.")
    timezone: str = Field("UTC", description="Default time zone for weeks and dates.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("not an http(s) URL")
        return v.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return check_timezone(v)


def check_timezone(value: str) -> str:
    """An IANA time zone name, or ValueError saying what to use instead."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)"
        ) from None
    return value


class Topic(_Model):
    key: Key = Field(description="Stable identifier used in subscriber preferences.")
    name: str = Field(description="Display name of the section.")
    aliases: list[str] = Field(
        default_factory=list, description="Feed categories that map onto this topic."
    )
    thoughts: list[str] = Field(
        default_factory=list, description="Fallback Thoughts prompts, rotated per email."
    )

    _k = field_validator("key")(classmethod(lambda cls, v: _check_key(v)))


class Source(_Model):
    name: str = Field(description="Name used in reports and on article cards.")
    type: Literal["rss", "atom", "jsonfeed", "markdown"] = Field(description="Reader to use.")
    url: str | None = Field(None, description="http(s) URL of a feed.")
    path: str | None = Field(None, description="File or folder, relative to digest.yaml.")
    topic: str | None = Field(None, description="Topic for entries that carry no category.")
    max_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=1024,
        description="Largest feed file or response accepted, in bytes; a bigger one is refused.",
    )

    @model_validator(mode="after")
    def _one_location(self) -> Source:
        if (self.url is None) == (self.path is None):
            raise ValueError("give exactly one of 'url' or 'path'")
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError("url: not an http(s) URL")
        return self


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


def wait_seconds(value: str) -> int:
    """'90m', '4h', '2d' as seconds; ValueError saying the accepted form."""
    return int(parse_duration(value).total_seconds())


class Variant(_Model):
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


class Experiment(_Model):
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
        _no_repeats([v.key for v in self.variants], "variants", "key")
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


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: str) -> timedelta:
    """A duration written like `2h`, `30m`, `1d`, `1h30m` or `90s`; ValueError otherwise."""
    m = _DURATION.match(value.strip())
    if not value.strip() or not m:
        raise ValueError(f"duration {value!r}: write it like 2h, 30m, 1d or 1h30m")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


class Schedule(_Model):
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


class Digest(_Model):
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

    _k = field_validator("key")(classmethod(lambda cls, v: _check_key(v)))

    @field_validator("archive", mode="before")
    @classmethod
    def _off(cls, v: object) -> object:
        return "off" if v is False else v  # YAML reads a bare `off` as false

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return None if v is None else check_timezone(v)


class SendGridSettings(_Model):
    host: str = Field("https://api.sendgrid.com", description="API host (EU: api.eu.sendgrid.com).")
    api_key_env: str = Field("SENDGRID_API_KEY", description="Environment variable with the key.")
    timeout: float = Field(30.0, gt=0, le=300, description="Seconds per HTTP request.")
    sandbox: bool = Field(False, description="Validate only; SendGrid delivers nothing.")
    categories: list[str] = Field(default_factory=list, description="Categories on every send.")
    cancel_margin_seconds: int = Field(
        600,
        ge=1,
        description="SendGrid withholds a cancelled batch only when cancelled at least this "
        "long before its send time.",
    )
    strict_lead_seconds: int = Field(
        660,
        ge=2,
        le=72 * 3600,
        description="Strict mode: each request is scheduled this far ahead, so a request in "
        "doubt can still be cancelled; must exceed cancel_margin_seconds.",
    )

    @model_validator(mode="after")
    def _lead_after_margin(self) -> SendGridSettings:
        if self.strict_lead_seconds <= self.cancel_margin_seconds:
            raise ValueError(
                f"strict_lead_seconds ({self.strict_lead_seconds}) must be greater than "
                f"cancel_margin_seconds ({self.cancel_margin_seconds})"
            )
        return self


class SmtpSettings(_Model):
    host: str = Field("127.0.0.1", description="SMTP server.")
    port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    security: Literal["starttls", "tls", "none"] = Field("starttls", description="TLS mode.")
    username_env: str = Field("SMTP_USERNAME", description="Environment variable with the login.")
    password_env: str = Field(
        "SMTP_PASSWORD", description="Environment variable with the password."
    )
    timeout: float = Field(30.0, gt=0, le=300, description="Seconds per SMTP operation.")
    connections: int = Field(
        4, ge=1, le=32, description="Connections used at once; each sends one message at a time."
    )
    pipelining: bool = Field(
        True,
        description="Send MAIL, RCPT and DATA in one write when the server offers PIPELINING "
        "(RFC 2920); off: wait for each answer.",
    )
    ca_file: str | None = Field(
        None, description="PEM file of a private CA to trust, relative to digest.yaml."
    )


class DkimSettings(_Model):
    domain: str = Field(description="Signing domain (d=); usually the sender's domain.")
    selector: str = Field(description="Selector (s=): the key is published at S._domainkey.D.")
    key_file: str | None = Field(
        None, description="PEM private key file, relative to digest.yaml; else from key_env."
    )
    key_env: str = Field(
        "DKIM_PRIVATE_KEY", description="Environment variable holding the PEM private key."
    )


class Delivery(_Model):
    transport: Literal["outbox", "smtp", "sendgrid"] = Field(
        "outbox", description="Default transport."
    )
    outbox_dir: str = Field("outbox", description="Folder for the outbox transport.")
    batch_size: int = Field(
        1000,
        ge=1,
        le=1000,
        description="Deliveries per batch: one provider request (SendGrid allows 1000).",
    )
    max_attempts: int = Field(5, ge=1, le=20, description="Tries per batch on retryable faults.")
    max_retry_seconds: float = Field(300.0, gt=0, description="Total time spent waiting to retry.")
    in_flight: int = Field(
        1,
        ge=1,
        le=8,
        description="SendGrid requests in flight at once (and `digest worker`'s default "
        "concurrency); a crash or a lost answer can then leave up to this many batches in "
        "doubt (strict mode still cancels each).",
    )
    max_failed_batches: int = Field(
        5,
        ge=1,
        le=1000,
        description="Stop the run after this many batches in a row failed for every recipient.",
    )
    sendgrid: SendGridSettings = Field(default_factory=SendGridSettings)  # type: ignore[arg-type]
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)  # type: ignore[arg-type]
    dkim: DkimSettings | None = Field(
        None, description="DKIM-sign SMTP and outbox messages; unset: no signature."
    )


class Web(_Model):
    webhook_public_key: str | None = Field(
        None, description="SendGrid Event Webhook verification key (base64 DER, P-256)."
    )
    webhook_max_age: int = Field(600, ge=1, description="Oldest accepted webhook timestamp, s.")
    threads: int = Field(
        4, ge=1, le=256, description="Worker threads of `digest serve` (waitress)."
    )
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes of `digest serve` sharing its port, each with `threads` "
        "threads (one per core lets busy pages use every core; one-click bursts need one).",
    )
    connection_limit: int = Field(
        1000, ge=1, description="Open connections `digest serve` accepts at once (waitress: 100)."
    )
    write_wait: float = Field(
        10.0,
        gt=0,
        le=600,
        description="Seconds an unsubscribe waits for a database another command holds "
        "locked before answering 503 (nothing changed).",
    )


class Config(_Model):
    site: Site
    sender: Sender
    topics: list[Topic] = Field(min_length=1)
    sources: list[Source] = Field(default_factory=list)
    digests: list[Digest] = Field(min_length=1)
    store: str = Field(
        "sqlite:///digest.db",
        description="SQLAlchemy URL; SQLite paths are relative to digest.yaml.",
    )
    templates_dir: str = Field(
        "templates", description="Templates folder; its files override digest's own, by name."
    )
    subscribers_dir: str = Field("subscribers", description="Default subscriber files folder.")
    delivery: Delivery = Field(default_factory=Delivery)  # type: ignore[arg-type]
    web: Web = Field(default_factory=Web)  # type: ignore[arg-type]
    root: Path = Field(Path("."), exclude=True, description="Folder of digest.yaml (set on load).")
    path: Path = Field(Path(DEFAULT_CONFIG), exclude=True, description="digest.yaml itself.")

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        keys = [t.key for t in self.topics]
        _no_repeats(keys, "topics", "key")
        _no_repeats([d.key for d in self.digests], "digests", "key")
        for i, source in enumerate(self.sources):
            if source.topic is not None and source.topic not in keys:
                raise ValueError(f"sources[{i}].topic: unknown topic {source.topic!r}")
        for i, digest in enumerate(self.digests):
            for j, topic in enumerate(digest.topics):
                if topic not in keys:
                    raise ValueError(
                        f"digests[{i}].topics[{j}]: unknown topic {topic!r} "
                        f"(known: {', '.join(keys)})"
                    )
        return self

    # -- lookups -------------------------------------------------------------
    def digest(self, key: str) -> Digest:
        for d in self.digests:
            if d.key == key:
                return d
        known = ", ".join(d.key for d in self.digests)
        raise ConfigError(str(self.path), f"no digest {key!r} (known: {known})", key="digests")

    def topic(self, key: str) -> Topic:
        for t in self.topics:
            if t.key == key:
                return t
        raise ConfigError(str(self.path), f"unknown topic {key!r}", key="topics")

    def resolve(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    @property
    def store_url(self) -> str:
        prefix = "sqlite:///"
        if self.store.startswith(prefix) and not self.store.startswith(prefix + "/"):
            rest = self.store[len(prefix) :]
            if rest and rest != ":memory:":
                return prefix + str(self.resolve(rest))
        return self.store

    def digest_timezone(self, digest: Digest) -> ZoneInfo:
        return ZoneInfo(digest.timezone or self.site.timezone)

    def schedule_timezone(self, digest: Digest) -> ZoneInfo:
        return ZoneInfo(digest.schedule.timezone or digest.timezone or self.site.timezone)


def _no_repeats(values: list[str], where: str, field: str) -> None:
    seen: set[str] = set()
    for i, v in enumerate(values):
        if v in seen:
            raise ValueError(f"{where}[{i}].{field}: {v!r} appears twice")
        seen.add(v)


def secret() -> str:
    """The signing secret for tokens; from the environment only, never from a file."""
    value = os.environ.get(SECRET_ENV, "")
    if len(value) < 8:
        raise ConfigError(
            SECRET_ENV,
            "not set (or shorter than 8 characters)",
            hint=f"export {SECRET_ENV}=<a long random string>; it signs unsubscribe links",
        )
    return value


def load_config(path: str | Path = DEFAULT_CONFIG) -> Config:
    """Read and validate digest.yaml; raise ConfigError naming file, key path and reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found", hint="pass --config PATH") from None
    except OSError as exc:
        raise ConfigError(str(path), exc.strerror or str(exc)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), f"invalid YAML: {reason}", line=line) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "expected a mapping at the top level")
    try:
        return Config.model_validate({**data, "root": path.resolve().parent, "path": path})
    except ValidationError as exc:
        raise _config_error(path, exc) from None


def _config_error(path: Path, exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    key = _key_path(err["loc"])
    reason = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        reason = "unknown key"
    elif err["type"] == "missing":
        reason = "required key is missing"
    # cross-reference errors carry their own key path in the message
    m = re.match(r"^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): (.*)$", reason)
    if m and not key:
        key, reason = m.group(1), m.group(2)
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return ConfigError(str(path), reason + more, key=key or None)


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = str(part)
        else:
            out += f".{part}"
    return out
