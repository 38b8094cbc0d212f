"""RFC 8058 one-click POSTs, answered in front of Flask.

A mail provider may send thousands of one-click POSTs at once, and nobody reads the page
it gets back. So `POST /u/<token>` with neither `via` nor `topic` in its form is answered
here: check the token, unsubscribe (the store commits before it returns, sharing one
transaction with the other unsubscribes of the moment), answer a short fixed page. No
request context, template or cookie. Everything else, including the unsubscribe page's
own form (`via=page`, `topic`), goes on to Flask unchanged.
"""

from __future__ import annotations

import html
import io
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from werkzeug.formparser import parse_form_data

from digest.errors import BusyError
from digest.tokens import BadToken, read_token
from digest.web.context import SECURITY_HEADERS, WebContext

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

MAX_FORM_BYTES = 64 * 1024  # a one-click body is 26 bytes; anything larger goes to Flask
PAGE_FIELDS = frozenset({"via", "topic"})  # the unsubscribe page's form, for Flask
REASON = "one-click"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Unsubscribed · {site}</title>
</head>
<body>
<h1>You are unsubscribed</h1>
<p>{email} will get no more emails from {site}{digests}.</p>
</body>
</html>
"""


class OneClick:
    """WSGI middleware: one-click unsubscribes here, every other request to `app`.

    `pages` holds the bodies Flask would answer with for a bad link (400) and for a
    database that stayed locked (503), rendered once when the app is made.
    """

    def __init__(
        self,
        app: WSGIApplication,
        ctx: WebContext,
        *,
        pages: dict[int, bytes],
        logger: logging.Logger,
    ) -> None:
        self._app = app
        self._ctx = ctx
        self._pages = pages
        self._logger = logger
        self._site = html.escape(ctx.config.site.name)
        self._names = {d.key: [d.name] for d in ctx.config.digests}
        self._all_names = [d.name for d in ctx.config.digests]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not path.startswith("/u/"):
            return self._app(environ, start_response)
        token = path[3:]
        fields = _form(environ) if token and "/" not in token else None
        if fields is None or fields & PAGE_FIELDS:
            return self._app(environ, start_response)
        status, body = self._unsubscribe(token)
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *SECURITY_HEADERS.items(),
        ]
        start_response(status, headers)
        return [body]

    def _unsubscribe(self, token: str) -> tuple[str, bytes]:
        ctx = self._ctx
        try:
            payload = read_token(ctx.secret, "unsubscribe", token)
            email = ctx.store.subscribers.unsubscribe(
                payload["s"], reason=REASON, now=ctx.now(), wait=ctx.config.web.write_wait
            )
        except BadToken:
            return "400 BAD REQUEST", self._pages[400]
        except BusyError as exc:
            self._logger.error("%s", exc)
            return "503 SERVICE UNAVAILABLE", self._pages[503]
        if email is None:  # same answer as a bad signature: ids must not be guessable
            return "400 BAD REQUEST", self._pages[400]
        return "200 OK", self._page(email, str(payload.get("e", "")))

    def _page(self, email: str, edition_key: str) -> bytes:
        """The subscriber's address and the digest the email came from (else every digest)."""
        names = self._names.get(edition_key.partition("/")[0]) or self._all_names
        digests = f" ({html.escape(', '.join(names))})" if names else ""
        page = _PAGE.format(site=self._site, email=html.escape(email), digests=digests)
        return page.encode()


def _form(environ: dict[str, Any]) -> frozenset[str] | None:
    """The names of the POST's form fields, the body put back for whoever reads it next;
    None for a body this path does not read (too large, or of unknown length)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if not 0 <= length <= MAX_FORM_BYTES:
        return None
    body: bytes = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    kind = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        return frozenset(k for k, _ in parse_qsl(body.decode("latin-1"), keep_blank_values=True))
    if kind == "multipart/form-data":  # what RFC 8058 recommends; rarer in practice
        _, form, files = parse_form_data(dict(environ))
        environ["wsgi.input"] = io.BytesIO(body)
        return frozenset(form) | frozenset(files)
    return frozenset()  # Flask reads no form from other bodies either
