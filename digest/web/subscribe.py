"""`/subscribe` and `/confirm/<token>`: double opt-in with a consent record (digest.signup).

The answer to a signup is the same whether or not the address is known, so the form
cannot be used to find out who subscribes; only the mailbox owner learns more. Mail goes
through the configured transport, like the digest itself.
"""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request

from digest import signup as signups
from digest.errors import TransportError
from digest.subscriber import Subscriber
from digest.subscribers import normalize_email
from digest.tokens import LinkSigner, make_token, read_token
from digest.transports.base import OutgoingEmail, Recipient
from digest.web.context import web
from digest.web.welcome import latest_for

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
    outcome = signups.sign_up(
        ctx.store,
        email,
        name,
        topics,
        ip=request.remote_addr or "",
        now=ctx.now(),
        timezone=ctx.config.site.timezone,
    )
    if outcome.mail == "none":
        current_app.logger.info("signup for a %s address: no mail sent", outcome.subscriber.status)
    else:
        _send_confirmation(outcome)
    return render_template("subscribe_sent.html", email=email), 200


@bp.get("/confirm/<token>")
def confirm(token: str) -> tuple[str, int]:
    ctx = web()
    payload = read_token(ctx.secret, "confirm", token)
    try:
        done = signups.confirm(ctx.store, payload, now=ctx.now())
    except signups.Unsubscribed as exc:
        return render_template(
            "error.html", title="This link is no longer valid", message=str(exc)
        ), 400
    if done.newly:
        _send_welcome(done.subscriber)
    return render_template("confirmed.html", subscriber=done.subscriber), 200


def _send_confirmation(outcome: signups.Signup) -> None:
    """The confirmation link (or, for a confirmed address, a reminder) to the address."""
    ctx = web()
    subscriber = outcome.subscriber
    assert subscriber.id is not None
    active = outcome.mail == "reminder"
    extra = {} if outcome.consent_id is None else {"c": outcome.consent_id}
    context = {
        "subscriber": subscriber,
        "site": ctx.config.site,
        "active": active,
        "confirm_link": f"{ctx.config.site.base_url}/confirm/"
        + make_token(ctx.secret, "confirm", subscriber.id, **extra),
        "preferences_link": LinkSigner(ctx.config.site.base_url, ctx.secret).preferences_url(
            subscriber.id
        ),
    }
    subject = "Your subscription to" if active else "Confirm your subscription to"
    _deliver(
        "confirmations",
        subscriber,
        f"{subject} {ctx.config.site.name}",
        render_template("confirm_email.html", **context),
        render_template("confirm_email.txt", **context),
    )


def _send_welcome(subscriber: Subscriber) -> None:
    """A welcome, with the latest edition of the reader's topics when there is one."""
    ctx = web()
    assert subscriber.id is not None
    links = LinkSigner(ctx.config.site.base_url, ctx.secret)
    context = {
        "subscriber": subscriber,
        "site": ctx.config.site,
        "latest": latest_for(ctx.config, ctx.store, subscriber.topics),
        "topic_names": [ctx.config.topic(t).name for t in subscriber.topics],
        "preferences_link": links.preferences_url(subscriber.id),
        "unsubscribe_link": links.unsubscribe_url(subscriber.id),
    }
    _deliver(
        "welcome",
        subscriber,
        f"Welcome to {ctx.config.site.name}",
        render_template("welcome_email.html", **context),
        render_template("welcome_email.txt", **context),
        unsubscribe=str(context["unsubscribe_link"]),
    )


def _deliver(
    kind: str, subscriber: Subscriber, subject: str, html: str, text: str, unsubscribe: str = ""
) -> None:
    ctx = web()
    assert subscriber.id is not None
    headers = {}
    if unsubscribe:
        headers = {
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
    email = OutgoingEmail(
        subject=subject,
        html=html,
        text=text,
        from_email=ctx.config.sender.address,
        from_name=ctx.config.sender.name,
        reply_to=ctx.config.sender.reply_to,
        # Not an edition delivery: the subscriber id names the outbox file, so a repeated
        # signup replaces that address's earlier confirmation instead of piling up.
        recipients=(
            Recipient(
                delivery_id=subscriber.id,
                email=subscriber.email,
                name=subscriber.name,
                headers=headers,
                custom_args={"subscriber_id": str(subscriber.id), "mail": kind},
            ),
        ),
        categories=(kind,),
    )
    transport = ctx.transport(kind)
    try:
        (result,) = transport.send(email)
    finally:
        transport.close()
    if not result.ok:
        raise TransportError(f"{kind} email not sent: {result.error}", retryable=True)


def _form(*, error: str = "", email: str = "") -> str:
    return render_template("subscribe.html", topics=web().config.topics, error=error, email=email)
