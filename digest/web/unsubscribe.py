"""`/u/<token>`: an unsubscribe page (GET changes nothing) and RFC 8058 one-click POST."""

from __future__ import annotations

from dataclasses import replace

from flask import Blueprint, render_template, request

from digest.config import Config
from digest.errors import InputError
from digest.subscriber import SUPPRESSED
from digest.tokens import BAD_LINK, BadToken, read_token
from digest.web.context import subscriber_for, web

bp = Blueprint("unsubscribe", __name__)


@bp.get("/u/<token>")
def page(token: str) -> str:
    subscriber, payload = subscriber_for("unsubscribe", token)
    config = web().config
    return render_template(
        "unsubscribe.html",
        subscriber=subscriber,
        digest_names=_digest_names(config, str(payload.get("e", ""))),
        topics=[config.topic(k) for k in subscriber.topics if _known(config, k)],
        already=subscriber.status in SUPPRESSED,
    )


@bp.post("/u/<token>")
def unsubscribe(token: str) -> str:
    """One-click: the signed token is the credential and POST is the intent; no cookie, no redirect.

    Mail clients send `List-Unsubscribe=One-Click` (urlencoded or multipart): that is one
    short write and nothing else, as a mail provider may send many at once. Our own page
    sends `via=page`, and optionally `topic` to leave one section only.
    """
    ctx = web()
    reason = "unsubscribe page" if request.form.get("via") == "page" else "one-click"
    topic = request.form.get("topic")
    if topic:
        return _leave_topic(token, topic, reason)
    payload = read_token(ctx.secret, "unsubscribe", token)
    email = ctx.store.subscribers.unsubscribe(
        payload["s"], reason=reason, now=ctx.now(), wait=ctx.config.web.write_wait
    )
    if email is None:
        raise BadToken(BAD_LINK)
    return render_template(
        "unsubscribed.html",
        email=email,
        topic=None,
        digest_names=_digest_names(ctx.config, str(payload.get("e", ""))),
    )


def _leave_topic(token: str, topic: str, reason: str) -> str:
    subscriber, payload = subscriber_for("unsubscribe", token)
    ctx = web()
    if not _known(ctx.config, topic):
        raise InputError("topic", f"unknown topic {topic!r}")
    left = tuple(k for k in subscriber.topics if k != topic)
    if not left:  # the last topic: leaving it is unsubscribing
        email = ctx.store.subscribers.unsubscribe(
            payload["s"], reason=reason, now=ctx.now(), wait=ctx.config.web.write_wait
        )
        return render_template(
            "unsubscribed.html",
            email=email or subscriber.email,
            topic=None,
            digest_names=_digest_names(ctx.config, str(payload.get("e", ""))),
        )
    if left != subscriber.topics:
        ctx.store.subscribers.update(replace(subscriber, topics=left), now=ctx.now())
    return render_template(
        "unsubscribed.html", email=subscriber.email, topic=ctx.config.topic(topic)
    )


def _known(config: Config, topic: str) -> bool:
    return any(t.key == topic for t in config.topics)


def _digest_names(config: Config, edition_key: str) -> list[str]:
    """The digest the email came from (its edition key is in the token), else every digest."""
    key = edition_key.partition("/")[0]
    named = [d.name for d in config.digests if d.key == key]
    return named or [d.name for d in config.digests]
