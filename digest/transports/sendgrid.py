"""SendGrid's v3 Mail Send: one request per OutgoingEmail, one personalization per recipient.

Mail Send bodies are serialised once, with orjson, and posted with urllib under the
official client's own headers (its key, its User-Agent). Through the client itself a
1,000-recipient request cost 15 µs more per recipient: it serialises the body with the
standard json module, then formats the whole body into a DEBUG log line that no handler
keeps. Batches and cancels (a few calls per run) go through the client as they are. The
client has no timeout by default and does not enforce SendGrid's limits, so both are done
here. The API key lives only inside the client's headers: no message or log line carries it.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import orjson
import sendgrid  # type: ignore[import-untyped]
from python_http_client.exceptions import HTTPError as ProviderError  # type: ignore[import-untyped]

from digest.config import Config, SendGridSettings
from digest.errors import ConfigError, TransportError
from digest.transports.base import OutgoingEmail, SendResult

MAX_PERSONALIZATIONS = 1000
ACCOUNT_REFUSALS = (401, 403)  # a bad or revoked key, or a key without mail.send: stop the run
MAX_CATEGORIES = 10
SEND_AT_LIMIT = timedelta(hours=72)
_DETAIL_CHARS = 300


class _NoHeaderDump(logging.Filter):
    """python_http_client logs request headers (the key) and bodies (addresses) at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not text.startswith(("HEADERS:", "PAYLOAD:"))


logging.getLogger("python_http_client.client").addFilter(_NoHeaderDump())


class SendGridTransport:
    """Sends through SendGrid's Mail Send API; never raises for an answer the provider gave."""

    name = "sendgrid"
    concurrent = True  # one client, a new connection per request: calls may overlap

    def __init__(
        self, api_key: str, settings: SendGridSettings, *, now: Callable[[], datetime]
    ) -> None:
        self._client = sendgrid.SendGridAPIClient(api_key, host=settings.host)
        # Every sub-client built from this one (mail.send, mail.batch, ...) copies `timeout`.
        self._client.client.timeout = settings.timeout
        self._settings = settings
        self._now = now
        self._mail_send = settings.host.rstrip("/") + "/v3/mail/send"
        self._headers = {**self._client.client.request_headers, "Content-Type": "application/json"}
        # what strict mode and cancelling need to know of this provider (cancel.Scheduler)
        self.cancel_margin = timedelta(seconds=settings.cancel_margin_seconds)
        self.strict_lead = timedelta(seconds=settings.strict_lead_seconds)
        self.request_timeout = settings.timeout

    def __repr__(self) -> str:
        return f"SendGridTransport(host={self._settings.host!r})"

    # -- sending -------------------------------------------------------------
    def send(self, email: OutgoingEmail) -> list[SendResult]:
        """Post `email` to all its recipients in one request; one result each, in order.

        What a failure proves decides what may follow (see SendResult): an HTTP answer
        other than 2xx, or an error while connecting or writing the request, proves
        nothing was accepted; an error after the request went out leaves it in doubt.
        """
        body = orjson.dumps(build_body(email, self._settings, self._now()))
        ids = [r.delivery_id for r in email.recipients]
        request = urllib.request.Request(self._mail_send, body, self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._settings.timeout) as response:
                response.read()
                message_id = response.headers.get("X-Message-Id")
        except urllib.error.HTTPError as exc:
            with exc:
                return _all(ids, ok=False, **self._refused(exc.code, exc.headers, exc.read()))
        except (OSError, http.client.HTTPException) as exc:
            reason = self._scrub(f"sendgrid: {_network_error(exc, self._settings.timeout)}")
            if _not_sent(exc):
                return _all(ids, ok=False, error=reason, retryable=True)
            return _all(ids, ok=False, error=reason, in_doubt=True)
        return _all(ids, ok=True, message_id=message_id)

    def _refused(self, status: int, headers: Any, body: bytes) -> dict[str, Any]:
        error = self._scrub(f"sendgrid HTTP {status}: {_provider_message(body)}")
        if status == 429:
            return {"error": error, "retryable": True, "retry_after": self._retry_after(headers)}
        if status in ACCOUNT_REFUSALS:
            return {"error": error, "fatal": True}
        return {"error": error, "retryable": status >= 500 or status == 408}

    def _retry_after(self, headers: Any) -> float | None:
        """Seconds until `X-RateLimit-Reset` (any mapping of headers), if it says."""
        reset = (headers or {}).get("X-RateLimit-Reset")
        try:
            at = float(reset) if reset is not None else None
        except ValueError:
            return None
        return None if at is None else max(0.0, at - self._now().timestamp())

    # -- provider batches (strict mode) --------------------------------------
    def create_batch(self) -> str:
        """A new provider batch id, so the sends that carry it can be cancelled later."""
        data = self._call("create a batch", lambda c: c.mail.batch.post())
        batch_id = data.get("batch_id") if isinstance(data, dict) else None
        if not isinstance(batch_id, str) or not batch_id:
            raise TransportError("sendgrid: create a batch: answer has no batch_id", retryable=True)
        return batch_id

    def cancel_batch(self, batch_id: str) -> None:
        """Cancel every send of `batch_id`; withheld if done `cancel_margin` before send_at."""
        body = {"batch_id": batch_id, "status": "cancel"}
        self._call(
            f"cancel batch {batch_id}", lambda c: c.user.scheduled_sends.post(request_body=body)
        )

    def _call(self, what: str, request: Callable[[Any], Any]) -> Any:
        try:
            response = request(self._client.client)
        except ProviderError as exc:
            status = int(exc.status_code)
            message = self._scrub(f"sendgrid: {what}: HTTP {status}: {_provider_message(exc.body)}")
            raise TransportError(
                message,
                retryable=status >= 500 or status in (408, 429),
                fatal=status in ACCOUNT_REFUSALS,
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            message = self._scrub(
                f"sendgrid: {what}: {_network_error(exc, self._settings.timeout)}"
            )
            raise TransportError(message, retryable=True, in_doubt=not _not_sent(exc)) from None
        try:
            return json.loads(response.body) if response.body else None
        except ValueError:
            return None

    def _scrub(self, text: str) -> str:
        # The key cannot reach these texts today; this keeps it so if a provider ever echoes it.
        key = self._client.api_key
        return text.replace(key, "[redacted]") if key else text

    def close(self) -> None:
        """Nothing to release: the client opens one connection per request."""


def build_body(email: OutgoingEmail, settings: SendGridSettings, now: datetime) -> dict[str, Any]:
    """The Mail Send body: shared content once, then one personalization per recipient, in order."""
    if len(email.recipients) > MAX_PERSONALIZATIONS:
        n = len(email.recipients)
        raise ValueError(f"{n} recipients in one SendGrid request; at most {MAX_PERSONALIZATIONS}")
    if not email.recipients:
        raise ValueError("a SendGrid request needs at least one recipient")
    body: dict[str, Any] = {
        "from": _address(email.from_email, email.from_name),
        "subject": email.subject,
        "content": [
            {"type": kind, "value": value}
            for kind, value in (("text/plain", email.text), ("text/html", email.html))
            if value
        ],
        # the recipient's own dicts, not copies: the body is only serialized, never changed
        "personalizations": [
            {
                "to": [{"email": r.email, "name": r.name} if r.name else {"email": r.email}],
                "substitutions": r.substitutions,
                "headers": r.headers,
                "custom_args": r.custom_args,
            }
            for r in email.recipients
        ],
    }
    if email.reply_to:
        body["reply_to"] = {"email": email.reply_to}
    if email.headers:
        body["headers"] = dict(email.headers)
    categories = _unique([*email.categories, *settings.categories])[:MAX_CATEGORIES]
    if categories:
        body["categories"] = categories
    if email.send_at is not None:
        if email.send_at - now > SEND_AT_LIMIT:
            raise ValueError(
                f"send_at {email.send_at.isoformat()} is more than 72 hours after {now.isoformat()}"
            )
        body["send_at"] = int(email.send_at.timestamp())
    if email.batch_id:
        body["batch_id"] = email.batch_id
    if settings.sandbox:
        body["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return body


def make_sendgrid(config: Config, *, now: Callable[[], datetime]) -> SendGridTransport:
    """The configured SendGrid transport, its key read from the environment."""
    settings = config.delivery.sendgrid
    key = os.environ.get(settings.api_key_env, "").strip()
    if not key:
        raise ConfigError(
            settings.api_key_env,
            "not set: the SendGrid API key comes from this environment variable",
            hint=f"export {settings.api_key_env}=SG.… (or name another variable in "
            "delivery.sendgrid.api_key_env)",
        )
    return SendGridTransport(key, settings, now=now)


def _address(email: str, name: str) -> dict[str, str]:
    return {"email": email, "name": name} if name else {"email": email}


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _all(ids: list[int], *, ok: bool, **fields: Any) -> list[SendResult]:
    return [SendResult(i, ok, **fields) for i in ids]


def _provider_message(body: bytes | str | None) -> str:
    """SendGrid's first error as 'message (field)'; the raw start of the body otherwise."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        first = json.loads(text)["errors"][0]
        message, field = str(first.get("message") or "error"), first.get("field")
        return f"{message} ({field})" if field else message
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return text.strip()[:_DETAIL_CHARS] or "no details"


def _not_sent(exc: BaseException) -> bool:
    """Whether the request provably never reached the provider whole.

    urllib wraps in URLError whatever fails while connecting or writing the request
    (refused, DNS, connect timeout): a request not written whole cannot be accepted.
    Anything raised while waiting for the answer (timeout, connection closed or reset)
    comes unwrapped, after the body went out: the provider may have accepted it.
    """
    return isinstance(exc, urllib.error.URLError)


def _network_error(exc: BaseException, timeout: float) -> str:
    """A short reason for a request that got no HTTP answer."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s (timed out)"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"[:_DETAIL_CHARS]
    return f"connection failed: {reason}"[:_DETAIL_CHARS]
