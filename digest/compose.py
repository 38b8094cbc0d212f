"""Build the OutgoingEmail of one batch: content rendered once per content key, links per recipient.

Recipients who share a content key (the same topics and variant) share one rendering;
only the signed unsubscribe / preference links differ, and those travel as substitutions
and per-recipient headers, so a provider request carries the HTML once per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

from digest.config import Config
from digest.editions import Edition
from digest.experiments.variants import variant_renderer
from digest.render import PREFERENCES, UNSUBSCRIBE
from digest.tokens import LinkSigner
from digest.transports.base import OutgoingEmail, Recipient

ONE_CLICK = "List-Unsubscribe=One-Click"


class Rendered(Protocol):
    """What sending reads from a rendered email (digest.render.RenderedEmail)."""

    @property
    def subject(self) -> str: ...
    @property
    def preheader(self) -> str: ...
    @property
    def html(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def sender_name(self) -> str: ...  # empty: the configured sender.name


# (topics, variant) -> content with link placeholders
Renderer = Callable[[tuple[str, ...], str], Rendered]


class Row(NamedTuple):
    """A planned delivery as the ledger hands it over: a tuple, so reading a batch of
    them from the driver is cheap."""

    id: int
    subscriber_id: int
    email: str
    name: str
    variant: str
    content_key: str


def content_key(
    subscriber_topics: Sequence[str], edition_topics: Sequence[str], variant: str
) -> str:
    """Recipients with the same key get identical content; empty when no topic is shared."""
    shared = sorted(set(subscriber_topics) & set(edition_topics))
    return f"{','.join(shared)}|{variant}" if shared else ""


def topics_of(key: str) -> tuple[str, ...]:
    """The topics encoded in a content key."""
    topics = key.partition("|")[0]
    return tuple(topics.split(",")) if topics else ()


def variant_of(key: str) -> str:
    return key.rpartition("|")[2]


class ContentCache:
    """Renders each content key once per run and keeps the result."""

    def __init__(self, render: Renderer) -> None:
        self._render = render
        self._done: dict[str, Rendered] = {}
        self.renders = 0

    def get(self, key: str) -> Rendered:
        found = self._done.get(key)
        if found is None:
            found = self._done[key] = self._render(topics_of(key), variant_of(key))
            self.renders += 1
        return found


def default_renderer(config: Config, edition: Edition) -> Renderer:
    """The digest's template (or each A/B variant's), compiled once, rendered with link
    placeholders."""
    return variant_renderer(config, edition)


def list_id(config: Config, edition: Edition) -> str:
    """`<DIGEST.HOST>`: lets mail clients group and filter the digest (RFC 2919)."""
    host = urlsplit(config.site.base_url).hostname or "localhost"
    return f"<{edition.digest}.{host}>"


def recipients(
    rows: Iterable[Row], *, links: LinkSigner, edition_key: str, test: bool = False
) -> list[Recipient]:
    """Each addressee with signed links, one-click unsubscribe headers and tracking args."""
    unsubscribe_url, preferences_url = links.unsubscribe_url, links.preferences_url
    extra = {"test": "true"} if test else {}
    out = []
    for row in rows:
        sid = row.subscriber_id
        unsubscribe = unsubscribe_url(sid, edition_key)
        out.append(
            Recipient(
                row.id,
                row.email,
                row.name,
                {UNSUBSCRIBE: unsubscribe, PREFERENCES: preferences_url(sid)},
                {"List-Unsubscribe": f"<{unsubscribe}>", "List-Unsubscribe-Post": ONE_CLICK},
                {
                    "delivery_id": str(row.id),
                    "edition": edition_key,
                    "variant": row.variant,
                    "subscriber_id": str(sid),
                    **extra,
                },
            )
        )
    return out


def recipient(row: Row, *, links: LinkSigner, edition: Edition, test: bool = False) -> Recipient:
    """One addressee (see `recipients`)."""
    return recipients([row], links=links, edition_key=edition.key, test=test)[0]


def compose(
    content: Rendered,
    recipients: Sequence[Recipient],
    *,
    config: Config,
    edition: Edition,
    batch_id: str | None = None,
    send_at: datetime | None = None,
    subject_prefix: str = "",
) -> OutgoingEmail:
    """One message for a batch of recipients who share `content`."""
    return OutgoingEmail(
        subject=subject_prefix + content.subject,
        html=content.html,
        text=content.text,
        from_email=config.sender.address,
        from_name=content.sender_name or config.sender.name,
        reply_to=config.sender.reply_to,
        recipients=tuple(recipients),
        headers={"List-Id": list_id(config, edition)},
        categories=(edition.digest,),
        send_at=send_at,
        batch_id=batch_id,
        preheader=content.preheader,
    )
