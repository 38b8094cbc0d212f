"""Subscribers: validation of addresses and rows, and managing one subscriber at a time.

Checking a row is on the path of every imported row, so what repeats across rows (a
domain, a topic list, a time zone) is checked once and remembered; the result is the same
as checking each row from scratch. Importing files is `subscriber_import`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any, Protocol

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from digest.config import Config, check_timezone
from digest.errors import NotFoundError, SubscriberError, UsageError
from digest.subscriber import STATUSES, Subscriber, SubscriberRecord, SubscriberRow, as_row

FIELDS = (
    "email", "name", "topics", "digests", "timezone", "locale", "status",
    "consent_at", "consent_method", "consent_source", "consent_ip",
)  # fmt: skip
_FIELD_SET = frozenset(FIELDS)
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
_TOPIC_SEPARATORS = re.compile(r"[;|,]")
# RFC 5322 dot-atom of ASCII characters: what email-validator accepts before the @ as is.
_ATEXT = r"[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+"
_ASCII_LOCAL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*\Z")
_MAX_ADDRESS = 254  # octets, RFC 5321 (as email-validator counts)
# A plain ASCII host name that email-validator takes as it is (lower-cased): labels of
# letters, digits and inner hyphens, at most 63 long, at least two, the last ending in a
# letter, and no "--" anywhere (which it reads as a would-be Punycode label, "xn--").
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_HOST = re.compile(rf"(?!.*--)(?:{_LABEL}\.)+(?:[A-Za-z0-9][A-Za-z0-9-]{{0,61}})?[A-Za-z]\Z")
_MAX_DOMAIN = 253  # octets, as email-validator counts
_CACHE = 4096  # distinct values remembered per check
_DOMAINS = 65536  # domains remembered: a large list has many, and checking one costs ~0.3 ms


class SubscriberOps(Protocol):
    """The store operations on subscribers this module uses (store.subscribers implements)."""

    def get_by_email(self, email: str) -> Subscriber | None: ...
    def add(self, subscriber: Subscriber, *, now: datetime) -> Subscriber: ...
    def record(self, email: str) -> SubscriberRecord | None: ...
    def delete(self, subscriber_id: int) -> bool: ...


class SubscriberStore(Protocol):
    """What the functions here take as `store`: anything with such a `subscribers`."""

    @property
    def subscribers(self) -> SubscriberOps: ...


# -- validation ------------------------------------------------------------------
def normalize_email(value: Any) -> str:
    """The address as stored (normalized, lower-case); ValueError says why it is not valid.

    The common address (an ASCII dot-atom before the @) needs only its domain checked, and
    a domain is checked once; anything else, and every address that fails, goes through
    email-validator whole, so answers and messages are email-validator's.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("email is missing")
    address = value.strip()
    local, at, domain = address.partition("@")
    if at and _ASCII_LOCAL.match(local) and (checked := _domain(domain)) is not None:
        normalized, longest = checked
        if len(local) + 1 + longest <= _MAX_ADDRESS:
            return f"{local}@{normalized}".lower()
    try:
        validated = validate_email(address, check_deliverability=False)  # no DNS
    except EmailNotValidError as exc:
        raise ValueError(f"invalid address {address!r}: {exc}") from None
    return validated.normalized.lower()


@lru_cache(maxsize=_DOMAINS)
def _domain(domain: str) -> tuple[str, int] | None:
    """A valid domain's normalized form and the octets its longest form takes (as given,
    normalized, or IDNA ASCII), or None: then the whole address goes through email-validator,
    for its own answer and message (an @ in the domain lands here too).

    A plain ASCII host name is settled here, by email-validator's own rules for one (its
    list of special-use names included); any other goes through email-validator."""
    if len(domain) <= _MAX_DOMAIN and _PLAIN_HOST.match(domain):
        lower = domain.lower()
        if not any(lower == d or lower.endswith("." + d) for d in SPECIAL_USE_DOMAIN_NAMES):
            return lower, len(domain)
    try:
        validated = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    forms = (domain, validated.domain, validated.ascii_domain)
    return validated.domain, max(len(f.encode()) for f in forms)


def check_topics(value: Any, known: Sequence[str]) -> tuple[str, ...]:
    """Topic keys from a list or a 'a;b|c' string, each one of `known`; at least one."""
    if isinstance(value, str):
        return _topics_text(value, tuple(known))
    if isinstance(value, list | tuple):
        return _topic_keys(list(value), known)
    if value is None:
        return _topic_keys([], known)
    raise ValueError("topics: expected a list or a ';'-separated string")


@lru_cache(maxsize=_CACHE)
def _topics_text(value: str, known: tuple[str, ...]) -> tuple[str, ...]:
    return _topic_keys(_TOPIC_SEPARATORS.split(value), known)


def _topic_keys(items: list[Any], known: Sequence[str]) -> tuple[str, ...]:
    topics: list[str] = []
    for item in items:
        key = str(item).strip().lower()
        if not key:
            continue
        if key not in known:
            raise ValueError(f"unknown topic {key!r} (valid: {', '.join(known)})")
        if key not in topics:
            topics.append(key)
    if not topics:
        raise ValueError(f"at least one topic is required (valid: {', '.join(known)})")
    return tuple(topics)


def check_digests(value: Any, known: Sequence[str]) -> tuple[str, ...]:
    """Digest keys from a list or an 'a;b' string, each one of `known`; empty means the
    first digest (so a file without the column changes nobody's choice)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items: list[Any] = _TOPIC_SEPARATORS.split(value)
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError("digests: expected a list or a ';'-separated string")
    keys = [str(i).strip().lower() for i in items if str(i).strip()]
    for key in keys:
        if key not in known:
            raise ValueError(f"unknown digest {key!r} (valid: {', '.join(known)})")
    return tuple(k for k in known if k in keys)


def check_status(value: str) -> str:
    if value not in STATUSES:
        raise ValueError(f"unknown status {value!r} (valid: {', '.join(STATUSES)})")
    return value


_zone = lru_cache(maxsize=_CACHE)(check_timezone)


@lru_cache(maxsize=_CACHE)
def _locale(value: str) -> str:
    if not _LOCALE.match(value):
        raise ValueError(f"locale: {value!r} is not a language tag such as en or pt-BR")
    return value


def _text(value: Any, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict | list):
        raise ValueError(f"{key}: expected text")
    return str(value).strip()


def _consent_at(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    when = value if isinstance(value, datetime) else None
    if when is None:
        try:
            when = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"consent_at: not an ISO 8601 date-time: {value!r}") from None
    if when.tzinfo is None:
        raise ValueError("consent_at: give a UTC offset, e.g. 2026-01-05T09:00:00Z")
    return when.astimezone(UTC)


@dataclass(frozen=True)
class Consent:
    """The consent record given to rows that carry none of their own."""

    at: datetime
    method: str
    source: str


@dataclass(frozen=True)
class RowRules:
    """What a row is checked against, taken from the config once."""

    topics: tuple[str, ...]
    digests: tuple[str, ...]
    timezone: str

    @classmethod
    def of(cls, config: Config) -> RowRules:
        return cls(
            topics=tuple(t.key for t in config.topics),
            digests=tuple(d.key for d in config.digests),
            timezone=config.site.timezone,
        )


RowCheck = Callable[[Mapping[str, Any]], SubscriberRow]


def row_checker(rules: RowRules, consent: Consent) -> RowCheck:
    """`check_row` for the many rows of one list. Only the address and the name differ
    from row to row in most lists: the other fields are checked once per distinct set of
    values (by value and type), with the same answers, messages and order of checks as
    checking each row from scratch."""

    def lists(topics: Any, digests: Any) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
        return (check_topics(topics, rules.topics), check_digests(digests, rules.digests),
                _text_or_value(digests))  # fmt: skip

    def settings(zone: Any, locale: Any, status: Any) -> tuple[str, str, str, tuple[bool, ...]]:
        zone_text = _text(zone, "timezone")
        timezone = _zone(zone_text or rules.timezone)
        locale_text = _text(locale, "locale")
        locale_tag = _locale(locale_text or "en")
        status_text = _text(status, "status")
        status_key = check_status(status_text.lower() or "active")
        given = (bool(zone_text), bool(locale_text), bool(status_text))
        return timezone, locale_tag, status_key, given

    def consent_of(
        ip_value: Any, at_value: Any, method_value: Any, source_value: Any
    ) -> tuple[datetime, str, str, str, tuple[bool, ...]]:
        ip = _text(ip_value, "consent_ip")
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ValueError(f"consent_ip: {ip!r} is not an IP address") from None
        at = _consent_at(at_value)
        method = _text(method_value, "consent_method")
        source = _text(source_value, "consent_source")
        given = (at is not None, bool(method), bool(source), bool(ip))
        return at or consent.at, method or consent.method, source or consent.source, ip, given

    cached_lists, cached_settings, cached_consent = (
        lru_cache(maxsize=_CACHE, typed=True)(f) for f in (lists, settings, consent_of)
    )

    def check(fields: Mapping[str, Any]) -> SubscriberRow:
        if not _FIELD_SET.issuperset(fields):
            unknown = [k for k in fields if k not in _FIELD_SET]
            raise ValueError(f"unknown field {unknown[0]!r} (valid: {', '.join(FIELDS)})")
        get = fields.get
        email = normalize_email(get("email"))
        try:
            topics, digests, digests_given = cached_lists(get("topics"), get("digests"))
        except TypeError:  # a list (YAML) cannot be a cache key: check it as it is
            topics, digests, digests_given = lists(get("topics"), get("digests"))
        name = _text(get("name"), "name")
        if len(name) > 200:
            raise ValueError("name: longer than 200 characters")
        given_settings = (get("timezone"), get("locale"), get("status"))
        try:
            timezone, locale, status, settings_given = cached_settings(*given_settings)
        except TypeError:
            timezone, locale, status, settings_given = settings(*given_settings)
        given_consent = (get("consent_ip"), get("consent_at"), get("consent_method"),
                         get("consent_source"))  # fmt: skip
        try:
            at, method, source, ip, consent_given = cached_consent(*given_consent)
        except TypeError:
            at, method, source, ip, consent_given = consent_of(*given_consent)
        given = _given(bool(name), digests_given, settings_given, consent_given)
        return as_row((email, name, topics, digests, timezone, locale, status, at, method,
                       source, ip, given))  # fmt: skip

    return check


def check_row(fields: Mapping[str, Any], rules: RowRules, consent: Consent) -> SubscriberRow:
    """One row checked field by field, with `consent` where it gives none of its own;
    ValueError says what is wrong (for many rows, `row_checker`)."""
    return row_checker(rules, consent)(fields)


def validate_row(
    fields: Mapping[str, Any], config: Config, consent: Consent
) -> tuple[Subscriber, frozenset[str]]:
    """A Subscriber from one row, and the fields the row gave; ValueError says what is wrong."""
    row = check_row(fields, RowRules.of(config), consent)
    return row.subscriber(), row.given


# Besides email and topics (always there in a valid row), in the order of _given's flags.
_OPTIONAL = ("name", "digests", "timezone", "locale", "status", "consent_at",
             "consent_method", "consent_source", "consent_ip")  # fmt: skip


@cache  # at most 2**9 sets, one object each
def _given(
    name: bool, digests: bool, settings: tuple[bool, ...], consent: tuple[bool, ...]
) -> frozenset[str]:
    flags = (name, digests, *settings, *consent)
    return frozenset(("email", "topics", *(n for n, f in zip(_OPTIONAL, flags, strict=True) if f)))


def _text_or_value(value: Any) -> bool:
    return value not in (None, "", [], ()) and not (isinstance(value, str) and not value.strip())


# -- one subscriber at a time (the CLI) ------------------------------------------
def add_subscriber(
    config: Config,
    store: SubscriberStore,
    email: str,
    *,
    topics: Sequence[str],
    now: datetime,
    name: str = "",
    timezone: str = "",
    status: str = "active",
    source: str = "command line",
) -> Subscriber:
    """Add one subscriber with a "cli" consent record; an address already known is refused."""
    fields = {"email": email, "name": name, "topics": list(topics), "timezone": timezone}
    try:
        subscriber, _ = validate_row(
            {**fields, "status": status}, config, Consent(at=now, method="cli", source=source)
        )
    except ValueError as exc:
        raise SubscriberError(email, str(exc)) from None
    if store.subscribers.get_by_email(subscriber.email) is not None:
        raise UsageError(
            f"{subscriber.email} is already a subscriber",
            hint="change it with `digest subscribers import FILE`, or remove it first",
        )
    return store.subscribers.add(subscriber, now=now)


def find_subscriber(store: SubscriberStore, email: str) -> SubscriberRecord:
    """Every stored fact about one subscriber; NotFoundError when the address is unknown."""
    record = store.subscribers.record(email)
    if record is None:
        raise NotFoundError(f"no subscriber {email.strip().lower()!r}")
    return record


def remove_subscriber(store: SubscriberStore, email: str) -> Subscriber:
    """Delete the subscriber's record (address, name, topics, consent); returns what it was."""
    subscriber = store.subscribers.get_by_email(email)
    if subscriber is None or subscriber.id is None:
        raise NotFoundError(f"no subscriber {email.strip().lower()!r}")
    store.subscribers.delete(subscriber.id)
    return subscriber
