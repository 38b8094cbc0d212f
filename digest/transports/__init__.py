"""The built-in transports, by name: the one table `--transport` and `delivery.transport` read.

Each factory imports its module only when called, so a transport whose module (or
dependency) is missing breaks only itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from digest.config import Config
from digest.errors import ConfigError
from digest.transports.base import Transport

Now = Callable[[], datetime]
Factory = Callable[[Config, str, Now], Transport]


def _outbox(config: Config, edition_key: str, now: Now) -> Transport:
    from digest.dkim import load_key
    from digest.transports.outbox import OutboxTransport

    folder = config.resolve(config.delivery.outbox_dir) / edition_key
    return OutboxTransport(folder, now, dkim=load_key(config))


def _smtp(config: Config, _edition_key: str, now: Now) -> Transport:
    from digest.transports.smtp import make_smtp

    return make_smtp(config, now=now)


def _sendgrid(config: Config, _edition_key: str, now: Now) -> Transport:
    from digest.transports.sendgrid import make_sendgrid

    return make_sendgrid(config, now=now)


TRANSPORTS: dict[str, Factory] = {"outbox": _outbox, "smtp": _smtp, "sendgrid": _sendgrid}


def make_transport(name: str, config: Config, *, edition_key: str, now: Now) -> Transport:
    """The transport called `name`, set up from `config`; ConfigError lists the valid names."""
    factory = TRANSPORTS.get(name)
    if factory is None:
        raise ConfigError(
            str(config.path),
            f"unknown transport {name!r} (valid: {', '.join(TRANSPORTS)})",
            key="delivery.transport",
        )
    return factory(config, edition_key, now)
