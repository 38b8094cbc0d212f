"""`/u/<token>`: an unsubscribe page (GET changes nothing) and RFC 8058 one-click POST."""

from __future__ import annotations

from dataclasses import replace

from flask import Blueprint, render_template, request

from digest.config import Config
from digest.errors import InputError
from digest.subscriber import SUPPRESSED, Subscriber
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

    Mail clients send `List-Unsubscribe=One-Click` (urlencoded or multipart); our own page
    sends `via=page`, and optionally `topic` to leave one section only.
    """
    subscriber, payload = subscriber_for("unsubscribe", token)
    ctx = web()
    topic = request.form.get("topic")
    reason = "unsubscribe page" if request.form.get("via") == "page" else "one-click"
    if topic:
        if not _known(ctx.config, topic):
            raise InputError("topic", f"unknown topic {topic!r}")
        left = tuple(k for k in subscriber.topics if k != topic)
        if left:
            if left != subscriber.topics:
                ctx.store.subscribers.update(replace(subscriber, topics=left), now=ctx.now())
            return render_template(
                "unsubscribed.html", subscriber=subscriber, topic=ctx.config.topic(topic)
            )
    _unsubscribe(subscriber, reason)
    return render_template(
        "unsubscribed.html",
        subscriber=subscriber,
        topic=None,
        digest_names=_digest_names(ctx.config, str(payload.get("e", ""))),
    )


def _unsubscribe(subscriber: Subscriber, reason: str) -> None:
    # Idempotent: an address that is already suppressed keeps its first status and reason
    # (a bounce or complaint says more than a later unsubscribe click).
    if subscriber.status in SUPPRESSED or subscriber.id is None:
        return
    ctx = web()
    ctx.store.subscribers.set_status(subscriber.id, "unsubscribed", reason=reason, now=ctx.now())


def _known(config: Config, topic: str) -> bool:
    return any(t.key == topic for t in config.topics)


def _digest_names(config: Config, edition_key: str) -> list[str]:
    """The digest the email came from (its edition key is in the token), else every digest."""
    key = edition_key.partition("/")[0]
    named = [d.name for d in config.digests if d.key == key]
    return named or [d.name for d in config.digests]
