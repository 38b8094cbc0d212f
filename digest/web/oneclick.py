"""RFC 8058 one-click POSTs, answered in front of Flask.

A mail provider may send thousands of one-click POSTs at once, and nobody reads the page
it gets back. So `POST /u/<token>` with neither `via` nor `topic` in its form is answered
here: check the token, unsubscribe (the store commits before it returns, sharing one
transaction with the other unsubscribes of the moment), answer a short fixed page. No
request context, template or cookie. Everything else, including the unsubscribe page's
own form (`via=page`, `topic`), goes on to Flask unchanged. `digest serve` answers the
plainest one-clicks before they become WSGI requests (`front`), through `answer_many`.
"""

from __future__ import annotations

import html
import io
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from werkzeug.formparser import parse_form_data

from digest.errors import BusyError
from digest.tokens import BadToken, read_token
from digest.web.context import SECURITY_HEADERS, WebContext
from digest.web.wire import PAGE_FIELDS

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

MAX_FORM_BYTES = 64 * 1024  # a one-click body is 26 bytes; anything larger goes to Flask
REASON = "one-click"
EXTENSION = "digest.one-click"  # where create_app keeps the OneClick, for the server
# An answer's headers but its length, as Flask with the app's `_secure` would send them
HEADERS = [("Content-Type", "text/html; charset=utf-8"), *SECURITY_HEADERS.items()]

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
        self.logger = logger
        self._site = html.escape(ctx.config.site.name)
        self._names = {d.key: [d.name] for d in ctx.config.digests}
        self._all_names = [d.name for d in ctx.config.digests]
        self._bad = ("400 BAD REQUEST", pages[400])
        self.busy = ("503 SERVICE UNAVAILABLE", pages[503])

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not path.startswith("/u/"):
            return self._app(environ, start_response)
        token = path[3:]
        fields = _form(environ) if token and "/" not in token else None
        if fields is None or fields & PAGE_FIELDS:
            return self._app(environ, start_response)
        ((status, body),) = self.answer_many([token], wait=self._ctx.config.web.write_wait)
        start_response(status, [*HEADERS, ("Content-Length", str(len(body)))])
        return [body]

    def answer_many(self, tokens: Sequence[str], *, wait: float) -> list[tuple[str, bytes]]:
        """The status and page for each one-click token, once every unsubscribe among them
        has committed (in one transaction, with whatever else is queued at the moment).

        A bad token gets 400 and writes nothing; if the database stayed locked for `wait`
        seconds, every good one gets 503 and nothing was written.
        """
        ctx = self._ctx
        payloads: list[dict[str, Any] | None] = []
        for token in tokens:
            try:
                payloads.append(read_token(ctx.secret, "unsubscribe", token))
            except BadToken:
                payloads.append(None)
        now = ctx.now()
        items = [(p["s"], REASON, now) for p in payloads if p is not None]
        try:
            emails = iter(ctx.store.subscribers.unsubscribe_many(items, wait=wait))
        except BusyError as exc:
            self.logger.error("%s", exc)
            return [self._bad if p is None else self.busy for p in payloads]
        answers = []
        for payload in payloads:
            email = None if payload is None else next(emails)
            if payload is None or email is None:  # unknown ids look like bad signatures
                answers.append(self._bad)
            else:
                answers.append(("200 OK", self._page(email, str(payload.get("e", "")))))
        return answers

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
