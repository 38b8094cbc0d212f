"""`/p/<token>`: the preference center (topics, time zone), safe from CSRF without cookies."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from zoneinfo import available_timezones

from flask import Blueprint, render_template, request

from digest.subscriber import SUPPRESSED, Subscriber
from digest.tokens import unsubscribe_url
from digest.web.context import form_signature, signature_ok, subscriber_for, web

bp = Blueprint("preferences", __name__)


@cache
def _zones() -> list[str]:
    return sorted(z for z in available_timezones() if "/" in z or z == "UTC")


@bp.get("/p/<token>")
def page(token: str) -> str:
    subscriber, _ = subscriber_for("preferences", token)
    return _render(token, subscriber)


@bp.post("/p/<token>")
def save(token: str) -> tuple[str, int]:
    subscriber, _ = subscriber_for("preferences", token)
    ctx = web()
    if not signature_ok(ctx.secret, token, request.form.get("csrf")):
        return _render(
            token, subscriber, error="This form expired or was not sent from this page."
        ), 400
    known = [t.key for t in ctx.config.topics]
    chosen = request.form.getlist("topics")
    unknown = [t for t in chosen if t not in known]
    timezone = request.form.get("timezone", subscriber.timezone)
    if unknown:
        return _render(token, subscriber, error=f"Unknown topic: {unknown[0]}."), 400
    if not chosen:
        return _render(token, subscriber, error="Choose at least one topic, or unsubscribe."), 400
    if timezone not in _zones():
        return _render(token, subscriber, error=f"Unknown time zone: {timezone}."), 400
    # Keep the configured section order, whatever order the browser sent.
    updated = replace(subscriber, topics=tuple(k for k in known if k in chosen), timezone=timezone)
    if updated != subscriber:
        ctx.store.subscribers.update(updated, now=ctx.now())
    return _render(token, updated, saved=True), 200


def _render(token: str, subscriber: Subscriber, *, error: str = "", saved: bool = False) -> str:
    ctx = web()
    assert subscriber.id is not None
    return render_template(
        "preferences.html",
        subscriber=subscriber,
        topics=ctx.config.topics,
        zones=_zones(),
        csrf=form_signature(ctx.secret, token),
        error=error,
        saved=saved,
        suppressed=subscriber.status in SUPPRESSED,
        unsubscribe_link=unsubscribe_url("", ctx.secret, subscriber.id),
    )
