"""Signed per-subscriber tokens for unsubscribe, preference and confirmation links.

A token binds a subscriber id to one purpose (the purpose is the signing salt), so an
unsubscribe token cannot open the preference center and vice versa. Unsubscribe and
preference tokens do not expire: a link in a year-old email must still work (RFC 8058).
"""

from __future__ import annotations

from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer, URLSafeTimedSerializer

from digest.errors import DigestError, ExitCode

PURPOSES = ("unsubscribe", "preferences", "confirm")
CONFIRM_MAX_AGE = 7 * 24 * 3600


class BadToken(DigestError):
    """A token that was tampered with, is for another purpose, or has expired."""

    exit_code = ExitCode.BAD_INPUT


def make_token(secret: str, purpose: str, subscriber_id: int, **extra: Any) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    payload = {"s": subscriber_id, **extra}
    if purpose == "confirm":
        return URLSafeTimedSerializer(secret, salt=purpose).dumps(payload)
    return URLSafeSerializer(secret, salt=purpose).dumps(payload)


def read_token(secret: str, purpose: str, token: str) -> dict[str, Any]:
    """The token's payload (`s` is the subscriber id); BadToken if it is not valid for `purpose`."""
    try:
        if purpose == "confirm":
            data = URLSafeTimedSerializer(secret, salt=purpose).loads(token, max_age=CONFIRM_MAX_AGE)
        else:
            data = URLSafeSerializer(secret, salt=purpose).loads(token)
    except BadSignature:
        raise BadToken("this link is not valid (it was changed, or is for something else)") from None
    if not isinstance(data, dict) or not isinstance(data.get("s"), int):
        raise BadToken("this link is not valid")
    return data


def unsubscribe_url(base_url: str, secret: str, subscriber_id: int, edition_key: str = "") -> str:
    extra = {"e": edition_key} if edition_key else {}
    return f"{base_url}/u/{make_token(secret, 'unsubscribe', subscriber_id, **extra)}"


def preferences_url(base_url: str, secret: str, subscriber_id: int) -> str:
    return f"{base_url}/p/{make_token(secret, 'preferences', subscriber_id)}"
