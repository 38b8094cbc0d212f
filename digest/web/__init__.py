"""The HTTP side: one-click unsubscribe, preferences, double opt-in and the SendGrid webhook.

`create_app` is the one place that wires config, store, clock and secret into Flask; each
concern is its own blueprint, and there is no module-level app.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask, Response, current_app, render_template
from jinja2 import ChoiceLoader, FileSystemLoader, PackageLoader

from digest.config import Config
from digest.config import secret as config_secret
from digest.errors import DigestError, InputError
from digest.store import open_store
from digest.tokens import BAD_LINK, BadToken
from digest.transports import make_transport
from digest.transports.base import Transport
from digest.web import archive, health, preferences, subscribe, unsubscribe, webhook
from digest.web.context import EXTENSION, SECURITY_HEADERS, WebContext, WebStore
from digest.web.oneclick import EXTENSION as ONE_CLICK
from digest.web.oneclick import OneClick

MAX_BODY_BYTES = 10 * 1024 * 1024


def create_app(
    config: Config,
    store: WebStore | None = None,
    *,
    now: Callable[[], datetime] | datetime | None = None,
    secret: str | None = None,
    transport: Callable[[str], Transport] | None = None,
) -> Flask:
    """A Flask app serving the subscriber pages and the webhook for `config`'s project."""
    app = Flask(__name__)
    # A page from the project's <templates_dir>/web if it has that file, else digest's own.
    app.jinja_loader = ChoiceLoader(
        [
            FileSystemLoader(config.resolve(config.templates_dir) / "web"),
            PackageLoader("digest", "templates/web"),
        ]
    )
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    clock = _clock(now)

    def configured(kind: str) -> Transport:
        return make_transport(config.delivery.transport, config, edition_key=kind, now=clock)

    ctx = WebContext(
        config=config,
        store=store if store is not None else open_store(config.store_url),
        now=clock,
        secret=secret if secret is not None else config_secret(),
        transport=transport or configured,
    )
    app.extensions[EXTENSION] = ctx
    for module in (unsubscribe, preferences, subscribe, webhook, health, archive):
        app.register_blueprint(module.bp)
    app.after_request(_secure)
    app.register_error_handler(BadToken, _bad_link)
    app.register_error_handler(InputError, _bad_input)
    app.register_error_handler(DigestError, _unavailable)
    app.context_processor(lambda: {"site": config.site})
    with app.test_request_context():  # the pages the one-click path answers errors with
        pages = {400: _bad_link(BadToken(BAD_LINK))[0], 503: _unavailable_page()}
    one_click = OneClick(
        app.wsgi_app, ctx, pages={k: v.encode() for k, v in pages.items()}, logger=app.logger
    )
    app.wsgi_app = one_click  # type: ignore[method-assign]
    app.extensions[ONE_CLICK] = one_click  # `digest serve` answers plain ones before WSGI
    return app


def _secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _clock(now: Callable[[], datetime] | datetime | None) -> Callable[[], datetime]:
    if now is None:
        # The factory is a wiring place, like the CLI: the one spot that reads the clock.
        return lambda: datetime.now(UTC)
    if isinstance(now, datetime):
        fixed = now
        return lambda: fixed
    return now


def _bad_link(exc: BadToken) -> tuple[str, int]:
    hint = "If you copied the link from an email, make sure you copied all of it."
    page = render_template(
        "error.html", title="This link does not work", message=str(exc), hint=hint
    )
    return page, 400


def _bad_input(exc: InputError) -> tuple[str, int]:
    return render_template("error.html", title="Something is not right", message=exc.reason), 400


def _unavailable(exc: DigestError) -> tuple[str, int]:
    current_app.logger.error("%s", exc)
    return _unavailable_page(), 503


def _unavailable_page() -> str:
    return render_template(
        "error.html", title="Please try again later", message="We could not do that just now."
    )
