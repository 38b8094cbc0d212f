"""`POST /webhooks/sendgrid`: the signed Event Webhook, verified before anything is parsed."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from flask import Blueprint, Response, jsonify, request

from digest.errors import InputError
from digest.events import apply_events, parse_sendgrid_payload
from digest.web.context import web

bp = Blueprint("webhook", __name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


class Rejected(Exception):
    """Why a webhook request is not trusted."""


def public_key(encoded: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it: base64 of a DER SubjectPublicKeyInfo."""
    try:
        key = load_der_public_key(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"web.webhook_public_key: not a base64 DER public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("web.webhook_public_key: not an elliptic-curve (P-256) key")
    return key


def verify(
    key: ec.EllipticCurvePublicKey,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    now: datetime,
    max_age: int,
) -> None:
    """Raise Rejected unless `signature` signs timestamp + raw body and the timestamp is fresh."""
    if not signature or not timestamp:
        raise Rejected("missing signature or timestamp header")
    try:
        sent = int(timestamp)
    except ValueError:
        raise Rejected("timestamp is not an integer") from None
    # A stale (or far-future) timestamp is a replayed or forged request, signed or not.
    if abs(now.timestamp() - sent) > max_age:
        raise Rejected("timestamp outside the accepted window")
    try:
        der = base64.b64decode(signature, validate=True)
        # The raw bytes, never re-serialized JSON: any change of spacing breaks the signature.
        key.verify(der, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise Rejected("bad signature") from None


@bp.post("/webhooks/sendgrid")
def sendgrid() -> tuple[Response, int]:
    ctx = web()
    if not ctx.config.web.webhook_public_key:
        return _answer("webhook disabled: set web.webhook_public_key in digest.yaml", 503)
    try:
        key = public_key(ctx.config.web.webhook_public_key)
    except ValueError as exc:
        return _answer(str(exc), 503)
    body = request.get_data(cache=False)
    now = ctx.now()
    try:
        verify(
            key,
            body,
            request.headers.get(SIGNATURE_HEADER),
            request.headers.get(TIMESTAMP_HEADER),
            now=now,
            max_age=ctx.config.web.webhook_max_age,
        )
    except Rejected as exc:
        return _answer(f"rejected: {exc}", 403)
    try:
        parsed = parse_sendgrid_payload(body, source="request body")
    except InputError as exc:
        return _answer(str(exc), 400)
    report = apply_events(ctx.store, parsed.events, now=now, ignored=parsed.ignored)
    # 200 even when some events were skipped: SendGrid retries any non-2xx answer for
    # 24 hours, so one event of an unknown type must not hold back (or replay) the batch.
    return jsonify(report.to_dict()), 200


def _answer(message: str, status: int) -> tuple[Response, int]:
    return jsonify({"error": message}), status
