"""Subscribers: the model, validation of addresses and rows, and importing files of them.

An import is all or nothing: every row of every file is checked first, and the store is
written in one transaction only when no row is invalid (or `skip_invalid` was asked for).
An import never lifts an unsubscribe, bounce or complaint: only the subscriber can.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from email_validator import EmailNotValidError, validate_email

from digest.config import Config, check_timezone
from digest.errors import NotFoundError, SubscriberError, UsageError
from digest.subscriber import STATUSES, SUPPRESSED, Subscriber, SubscriberRecord
from digest.subscriber_files import expand, read_file

FIELDS = (
    "email", "name", "topics", "timezone", "locale", "status",
    "consent_at", "consent_method", "consent_source", "consent_ip",
)  # fmt: skip
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
_TOPIC_SEPARATORS = re.compile(r"[;|,]")


class SubscriberOps(Protocol):
    """The store operations on subscribers this module uses (store.subscribers implements)."""

    def get_by_email(self, email: str) -> Subscriber | None: ...
    def get_many_by_email(self, emails: Iterable[str]) -> dict[str, Subscriber]: ...
    def add(self, subscriber: Subscriber, *, now: datetime) -> Subscriber: ...
    def apply_import(
        self, adds: Sequence[Subscriber], updates: Sequence[Subscriber], *, now: datetime
    ) -> None: ...
    def record(self, email: str) -> SubscriberRecord | None: ...
    def delete(self, subscriber_id: int) -> bool: ...


class SubscriberStore(Protocol):
    """What the functions here take as `store`: anything with such a `subscribers`."""

    @property
    def subscribers(self) -> SubscriberOps: ...


# -- validation ------------------------------------------------------------------
def normalize_email(value: Any) -> str:
    """The address as stored (normalized, lower-case); ValueError says why it is not valid."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("email is missing")
    try:
        checked = validate_email(value.strip(), check_deliverability=False)  # no DNS
    except EmailNotValidError as exc:
        raise ValueError(f"invalid address {value.strip()!r}: {exc}") from None
    return checked.normalized.lower()


def check_topics(value: Any, known: Sequence[str]) -> tuple[str, ...]:
    """Topic keys from a list or a 'a;b|c' string, each one of `known`; at least one."""
    if isinstance(value, str):
        items: list[Any] = _TOPIC_SEPARATORS.split(value)
    elif isinstance(value, list | tuple):
        items = list(value)
    elif value is None:
        items = []
    else:
        raise ValueError("topics: expected a list or a ';'-separated string")
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


def check_status(value: str) -> str:
    if value not in STATUSES:
        raise ValueError(f"unknown status {value!r} (valid: {', '.join(STATUSES)})")
    return value


def _text(fields: Mapping[str, Any], key: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
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


def validate_row(
    fields: Mapping[str, Any], config: Config, consent: Consent
) -> tuple[Subscriber, frozenset[str]]:
    """A Subscriber from one row, and the fields the row gave; ValueError says what is wrong."""
    unknown = [k for k in fields if k not in FIELDS]
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (valid: {', '.join(FIELDS)})")
    email = normalize_email(fields.get("email"))
    topics = check_topics(fields.get("topics"), [t.key for t in config.topics])
    given = frozenset(k for k in FIELDS if _text_or_value(fields.get(k)))
    name = _text(fields, "name")
    if len(name) > 200:
        raise ValueError("name: longer than 200 characters")
    timezone = check_timezone(_text(fields, "timezone") or config.site.timezone)
    locale = _text(fields, "locale") or "en"
    if not _LOCALE.match(locale):
        raise ValueError(f"locale: {locale!r} is not a language tag such as en or pt-BR")
    status = check_status(_text(fields, "status").lower() or "active")
    ip = _text(fields, "consent_ip")
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"consent_ip: {ip!r} is not an IP address") from None
    at = _consent_at(fields.get("consent_at"))
    subscriber = Subscriber(
        email=email,
        name=name,
        topics=topics,
        timezone=timezone,
        locale=locale,
        status=status,
        consent_at=at or consent.at,
        consent_method=_text(fields, "consent_method") or consent.method,
        consent_source=_text(fields, "consent_source") or consent.source,
        consent_ip=ip,
    )
    return subscriber, given


def _text_or_value(value: Any) -> bool:
    return value not in (None, "", [], ()) and not (isinstance(value, str) and not value.strip())


# -- import ------------------------------------------------------------------------
@dataclass(frozen=True)
class RowRef:
    """A row that went in (or would have): where it is and whose it is."""

    file: str
    line: int
    email: str
    note: str = ""  # for kept rows: the status that was kept


@dataclass(frozen=True)
class InvalidRow:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class ImportReport:
    """What an import did, row by row; `applied` is False for a dry run or a refused import."""

    files: tuple[str, ...]
    added: tuple[RowRef, ...]
    updated: tuple[RowRef, ...]
    unchanged: tuple[RowRef, ...]
    kept: tuple[RowRef, ...]  # known unsubscribed/bounced/complained: status left as it was
    invalid: tuple[InvalidRow, ...]
    applied: bool


def import_subscribers(
    config: Config,
    store: SubscriberStore,
    paths: Iterable[str | Path],
    *,
    now: datetime,
    skip_invalid: bool = False,
    dry_run: bool = False,
) -> ImportReport:
    """Add or update the subscribers listed in YAML/CSV files (a directory: every file in it).

    Nothing is written when a row is invalid, unless `skip_invalid`; then the valid rows
    go in and the invalid ones are listed. The write is one transaction.
    """
    given = list(paths)
    for raw in given:
        if not Path(raw).exists():
            raise SubscriberError(str(raw), "no such file or directory")
    files = expand(given)
    if not files:
        raise SubscriberError(", ".join(map(str, given)), "no *.yaml, *.yml or *.csv files")
    rows: list[tuple[str, int, Subscriber, frozenset[str]]] = []
    invalid: list[InvalidRow] = []
    first_seen: dict[str, tuple[str, int]] = {}
    for path in files:
        parsed = read_file(path)
        invalid.extend(InvalidRow(p.file, p.line, p.reason) for p in parsed.problems)
        consent = Consent(at=now, method="import", source=path.name)
        for raw_row in parsed.rows:
            try:
                subscriber, fields_given = validate_row(raw_row.fields, config, consent)
            except ValueError as exc:
                invalid.append(InvalidRow(raw_row.file, raw_row.line, str(exc)))
                continue
            seen = first_seen.get(subscriber.email)
            if seen is not None:
                where = f"{seen[0]}:{seen[1]} and {raw_row.file}:{raw_row.line}"
                invalid.append(
                    InvalidRow(
                        raw_row.file, raw_row.line, f"{subscriber.email} appears twice: {where}"
                    )
                )
                continue
            first_seen[subscriber.email] = (raw_row.file, raw_row.line)
            rows.append((raw_row.file, raw_row.line, subscriber, fields_given))

    existing = store.subscribers.get_many_by_email([r[2].email for r in rows])
    adds: list[Subscriber] = []
    changes: list[Subscriber] = []
    out: dict[str, list[RowRef]] = {"added": [], "updated": [], "unchanged": [], "kept": []}
    for file, line, subscriber, fields_given in rows:
        old = existing.get(subscriber.email)
        if old is None:
            adds.append(subscriber)
            out["added"].append(RowRef(file, line, subscriber.email))
            continue
        merged, kind = merge(old, subscriber, fields_given)
        if merged != old:
            changes.append(merged)
        note = old.status if kind == "kept" else ""
        out[kind].append(RowRef(file, line, subscriber.email, note))

    apply = not dry_run and (skip_invalid or not invalid)
    if apply and (adds or changes):
        store.subscribers.apply_import(adds, changes, now=now)
    return ImportReport(
        files=tuple(str(f) for f in files),
        added=tuple(out["added"]),
        updated=tuple(out["updated"]),
        unchanged=tuple(out["unchanged"]),
        kept=tuple(out["kept"]),
        invalid=tuple(invalid),
        applied=apply,
    )


def merge(old: Subscriber, row: Subscriber, given: frozenset[str]) -> tuple[Subscriber, str]:
    """The stored subscriber updated from an import row, and whether it was updated,
    unchanged, or kept (a suppressed status the row would have lifted)."""
    changes: dict[str, Any] = {}
    for name in ("name", "topics", "timezone", "locale"):
        if (name in given or name == "topics") and getattr(row, name) != getattr(old, name):
            changes[name] = getattr(row, name)
    kept = old.status in SUPPRESSED and row.status != old.status
    # A confirmed opt-in is not undone by a list that still says "pending".
    undoes_opt_in = old.status == "active" and row.status == "pending"
    if not kept and "status" in given and row.status != old.status and not undoes_opt_in:
        changes["status"] = row.status
    if not kept and old.consent_at is None and row.consent_at is not None:
        changes.update(
            consent_at=row.consent_at,
            consent_method=row.consent_method,
            consent_source=row.consent_source,
            consent_ip=row.consent_ip,
        )
    merged = replace(old, **changes)
    if kept:
        return merged, "kept"
    return merged, "updated" if changes else "unchanged"


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
