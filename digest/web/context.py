"""What every request handler needs (config, store, clock, secret), and token lookups.

The web side declares the store operations it uses as the protocols below; `create_app`
hands it a `digest.store.Store`, which implements them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from flask import current_app

from digest.config import Config
from digest.events import EventLedger
from digest.signup import SignupConsents
from digest.subscriber import Subscriber
from digest.tokens import BAD_LINK, BadToken, read_token
from digest.transports.base import Transport
from digest.web.welcome import PublishedEditions

EXTENSION = "digest"
# No script runs on any page; styles are inline (email HTML needs them), images come from
# the articles' hosts. Forms post only here, and no other site may frame a page.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src https: data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class WebSubscribers(Protocol):
    """Subscriber operations of the pages: look up, sign up, change, unsubscribe."""

    def get(self, subscriber_id: int) -> Subscriber | None: ...
    def get_by_email(self, email: str) -> Subscriber | None: ...
    def add(self, subscriber: Subscriber, *, now: datetime) -> Subscriber: ...
    def update(self, subscriber: Subscriber, *, now: datetime) -> None: ...
    def set_status(
        self, subscriber_id: int, status: str, *, reason: str, now: datetime
    ) -> bool: ...
    def unsubscribe(
        self, subscriber_id: int, *, reason: str, now: datetime, wait: float
    ) -> str | None: ...
    def unsubscribe_many(
        self, items: Sequence[tuple[int, str, datetime]], *, wait: float
    ) -> list[str | None]: ...


class WebStore(Protocol):
    """The store as the web side sees it."""

    @property
    def subscribers(self) -> WebSubscribers: ...
    @property
    def consents(self) -> SignupConsents: ...
    @property
    def editions(self) -> PublishedEditions: ...
    @property
    def events(self) -> EventLedger: ...
    def ping(self) -> bool: ...


@dataclass(frozen=True)
class WebContext:
    config: Config
    store: WebStore
    now: Callable[[], datetime]
    secret: str
    # The configured transport for mail the web side sends; the name says which mail
    # ("confirmations", "welcome") and is the outbox's subfolder.
    transport: Callable[[str], Transport]


def web() -> WebContext:
    """The context `create_app` wired for the app serving this request."""
    ctx: WebContext = current_app.extensions[EXTENSION]
    return ctx


def subscriber_for(purpose: str, token: str) -> tuple[Subscriber, dict[str, Any]]:
    """The subscriber a token names, and its payload; BadToken if either is not valid."""
    ctx = web()
    payload = read_token(ctx.secret, purpose, token)
    subscriber = ctx.store.subscribers.get(payload["s"])
    if subscriber is None:
        # Same answer as a bad signature: a link must not reveal which ids exist.
        raise BadToken(BAD_LINK)
    return subscriber, payload


def form_signature(secret: str, token: str) -> str:
    """HMAC tying a form to its link, so a page needs no cookie to be safe from CSRF."""
    return hmac.new(secret.encode(), f"csrf:{token}".encode(), hashlib.sha256).hexdigest()


def signature_ok(secret: str, token: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(form_signature(secret, token), given)
