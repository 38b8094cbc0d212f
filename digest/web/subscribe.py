"""`/subscribe` and `/confirm/<token>`: double opt-in with a consent record.

The answer to a signup is the same whether or not the address is known, so the form
cannot be used to find out who subscribes; only the mailbox owner learns more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from flask import Blueprint, render_template, request

from digest.config import Config
from digest.errors import TransportError
from digest.subscriber import Subscriber
from digest.subscribers import normalize_email
from digest.tokens import make_token, preferences_url
from digest.transports.base import OutgoingEmail, Recipient
from digest.transports.outbox import OutboxTransport
from digest.web.context import WebStore, subscriber_for, web

bp = Blueprint("subscribe", __name__)


@bp.get("/subscribe")
def form() -> str:
    return _form()


@bp.post("/subscribe")
def signup() -> tuple[str, int]:
    ctx = web()
    raw_email = request.form.get("email", "").strip()
    name = request.form.get("name", "").strip()[:200]
    known = [t.key for t in ctx.config.topics]
    chosen = request.form.getlist("topics")
    try:
        email = normalize_email(raw_email)
    except ValueError as exc:
        return _form(error=f"That email address does not look right: {exc}", email=raw_email), 400
    if any(t not in known for t in chosen):
        return _form(error="Unknown topic.", email=raw_email), 400
    topics = tuple(k for k in known if k in chosen) or tuple(known)
    now = ctx.now()
    subscriber = record_signup(
        ctx.store,
        email,
        name,
        topics,
        ip=request.remote_addr or "",
        now=now,
        timezone=ctx.config.site.timezone,
    )
    _send_confirmation(ctx.config, ctx.secret, subscriber, ctx.now)
    return render_template("subscribe_sent.html", email=email), 200


@bp.get("/confirm/<token>")
def confirm(token: str) -> tuple[str, int]:
    subscriber, _ = subscriber_for("confirm", token)
    ctx = web()
    if subscriber.status == "pending" and subscriber.id is not None:
        ctx.store.subscribers.set_status(subscriber.id, "active", reason="confirmed", now=ctx.now())
    elif subscriber.status != "active":
        # Unsubscribed (or bounced, complained) since this link was sent: only a new
        # signup may bring the address back.
        return render_template(
            "error.html",
            title="This link is no longer valid",
            message="This address was unsubscribed after the link was sent. "
            "Sign up again to resubscribe.",
        ), 400
    return render_template("confirmed.html", subscriber=subscriber), 200


def record_signup(
    store: WebStore,
    email: str,
    name: str,
    topics: tuple[str, ...],
    *,
    ip: str,
    now: datetime,
    timezone: str = "UTC",
) -> Subscriber:
    """Create or refresh a pending subscriber with a new consent record; active ones stay."""
    existing = store.subscribers.get_by_email(email)
    if existing is not None and existing.status == "active":
        # A form anyone can fill in must not change a confirmed subscriber's settings.
        return existing
    base = existing or Subscriber(email=email, timezone=timezone)
    refreshed = replace(
        base,
        name=name or base.name,
        topics=topics,
        status="pending",
        consent_at=now,
        consent_method="double-opt-in",
        consent_source="web form",
        consent_ip=ip,
    )
    if existing is None:
        return store.subscribers.add(refreshed, now=now)
    store.subscribers.update(refreshed, now=now)
    if existing.id is not None:
        # A new opt-in is the one thing that may lift an unsubscribe, bounce or complaint.
        store.subscribers.set_status(existing.id, "pending", reason="signup", now=now)
    return refreshed


def _send_confirmation(
    config: Config, secret: str, subscriber: Subscriber, now: Callable[[], datetime]
) -> None:
    """Write the confirmation (or, for a confirmed address, a reminder) to the outbox."""
    assert subscriber.id is not None
    context = {
        "subscriber": subscriber,
        "site": config.site,
        "active": subscriber.status == "active",
        "confirm_link": f"{config.site.base_url}/confirm/"
        + make_token(secret, "confirm", subscriber.id),
        "preferences_link": preferences_url(config.site.base_url, secret, subscriber.id),
    }
    subject = "Your subscription to" if context["active"] else "Confirm your subscription to"
    email = OutgoingEmail(
        subject=f"{subject} {config.site.name}",
        html=render_template("confirm_email.html", **context),
        text=render_template("confirm_email.txt", **context),
        from_email=config.sender.address,
        from_name=config.sender.name,
        reply_to=config.sender.reply_to,
        # Not an edition delivery: the subscriber id names the file, so a repeated signup
        # replaces that address's earlier confirmation instead of piling up.
        recipients=(
            Recipient(delivery_id=subscriber.id, email=subscriber.email, name=subscriber.name),
        ),
    )
    transport = OutboxTransport(config.resolve(config.delivery.outbox_dir) / "confirmations", now)
    try:
        (result,) = transport.send(email)
    finally:
        transport.close()
    if not result.ok:
        raise TransportError(f"confirmation email not sent: {result.error}", retryable=True)


def _form(*, error: str = "", email: str = "") -> str:
    return render_template("subscribe.html", topics=web().config.topics, error=error, email=email)
