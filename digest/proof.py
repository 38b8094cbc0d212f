"""Test sends: an edition as one subscriber would receive it, to chosen addresses only,
with the ledger untouched (`digest send --test`)."""

from __future__ import annotations

from collections.abc import Sequence

from digest import compose
from digest.compose import ContentCache, Renderer, Row
from digest.config import Config
from digest.editions import Edition
from digest.errors import UsageError
from digest.retry import call_transport
from digest.subscribers import Subscriber
from digest.tokens import LinkSigner
from digest.transports.base import SendResult, Transport


def test_send(
    edition: Edition,
    subscriber: Subscriber,
    to: Sequence[str],
    *,
    config: Config,
    transport: Transport,
    secret: str,
    render: Renderer | None = None,
) -> list[SendResult]:
    """Send the edition as `subscriber` would receive it, to `to` only; the ledger is untouched."""
    key = compose.content_key(subscriber.topics, edition.topics(), "A")
    if not key:
        raise UsageError(
            f"{subscriber.email} follows no topic of {edition.key}: they would get nothing"
        )
    content = ContentCache(render or compose.default_renderer(config, edition)).get(key)
    recipients = [
        compose.recipient(
            Row(0, subscriber.id or 0, address, subscriber.name, "A", key),
            links=LinkSigner(config.site.base_url, secret),
            edition=edition,
            test=True,
        )
        for address in to
    ]
    email = compose.compose(
        content, recipients, config=config, edition=edition, subject_prefix="[TEST] "
    )
    return call_transport(transport, email)


test_send.__test__ = False  # type: ignore[attr-defined]  # a library function, not a pytest test
