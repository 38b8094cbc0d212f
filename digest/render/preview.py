"""Preview: the exact email one subscriber would get from a frozen edition, as files to open."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from digest import tokens
from digest.config import Config, secret
from digest.editions import EditionReader, find_edition
from digest.errors import NotFoundError, UsageError
from digest.render.email import RenderedEmail, render_email
from digest.render.templates import compile_template
from digest.render.view import PREFERENCES, UNSUBSCRIBE
from digest.subscriber import Subscriber

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


class SubscriberLookup(Protocol):
    def get_by_email(self, email: str) -> Subscriber | None: ...


class PreviewStore(Protocol):
    """The store operations a preview uses (digest.store.Store implements them)."""

    @property
    def editions(self) -> EditionReader: ...
    @property
    def subscribers(self) -> SubscriberLookup: ...


@dataclass(frozen=True)
class Preview:
    html_path: Path
    text_path: Path
    email: RenderedEmail
    note: str  # e.g. why a real send would skip this subscriber
    variants_path: Path | None = None  # every A/B variant side by side, when the digest has a test


def default_out(config: Config, digest: str, week: str) -> Path:
    return config.root / "preview" / digest / week


def write_preview(
    config: Config, store: PreviewStore, digest: str, week: str, email: str, out: Path | None = None
) -> Preview:
    """Render the frozen edition for one stored subscriber with real signed links.

    Writes EMAIL.html and EMAIL.txt into `out` (default preview/DIGEST/WEEK/). Raises
    NotFoundError when the edition was not built or the subscriber is unknown, and
    UsageError when the subscriber follows none of the edition's topics.
    """
    spec = config.digest(digest)
    edition = find_edition(config, store.editions, digest, week)
    subscriber = store.subscribers.get_by_email(email)
    if subscriber is None or subscriber.id is None:
        raise NotFoundError(
            f"no subscriber {email!r}", hint="add them with: digest subscribers import FILE"
        )
    compiled = compile_template(config.resolve(config.templates_dir), spec.template)
    key = secret()
    links = {
        UNSUBSCRIBE: tokens.unsubscribe_url(config.site.base_url, key, subscriber.id, edition.key),
        PREFERENCES: tokens.preferences_url(config.site.base_url, key, subscriber.id),
    }
    # The same topics a send would use: the subscriber's that the edition has.
    topics = [t for t in edition.topics() if t in subscriber.topics]
    if not topics:
        raise UsageError(
            f"{subscriber.email} follows no topic of {edition.key}: they would get nothing",
            hint=f"the edition has: {', '.join(edition.topics())}",
        )
    rendered = render_email(compiled, config, edition, topics, links=links)
    out = out if out is not None else default_out(config, edition.digest, edition.period)
    out.mkdir(parents=True, exist_ok=True)
    stem = _UNSAFE.sub("_", subscriber.email)
    html_path, text_path = out / f"{stem}.html", out / f"{stem}.txt"
    html_path.write_text(rendered.html, encoding="utf-8")
    text_path.write_text(rendered.text, encoding="utf-8")
    variants_path = None
    if spec.experiment is not None:
        from digest.experiments.preview import write_variants

        variants_path = write_variants(
            config, edition, topics, links, out / f"{stem}.variants.html"
        )
    note = ""
    if subscriber.status != "active":
        note = f"subscriber is {subscriber.status}: a real send would skip them"
    return Preview(
        html_path=html_path,
        text_path=text_path,
        email=rendered,
        note=note,
        variants_path=variants_path,
    )
