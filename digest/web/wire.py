"""A one-click POST read from a connection's first bytes, and its answer as bytes.

`read_one_click` accepts only the plainest form of `POST /u/TOKEN` (what mail providers
send): one request, whole, in CRLF lines, a Content-Length body of a few bytes that is not
the unsubscribe page's own form, no Transfer-Encoding, no Expect. For anything else it
says None, and the connection goes to waitress, which answers it as before (the same
one-click page, through Flask's app). `answer` writes the bytes waitress would write for
the same response, headers in its order, so the client cannot tell the two apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

MAX_HEAD = 8192  # request line and headers; a provider's POST has about 300 bytes
MAX_BODY = 1024  # a one-click body is 26 bytes
PAGE_FIELDS = frozenset({"via", "topic"})  # the unsubscribe page's form, for Flask
ONE_CLICK = b"List-Unsubscribe=One-Click"
_PREFIX = b"POST /u/"
# The request line (a token's alphabet: nothing to unquote, no query) and header lines,
# each an RFC 9110 token, a colon and a value without CR or LF, up to the empty line.
_HEAD = re.compile(
    rb"POST /u/([A-Za-z0-9_.\-]+) HTTP/(1\.[01])\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n]*\r\n)*)\r\n"
)
# Headers that decide how the request is read or answered (a second copy of one goes to
# waitress rather than being guessed at), their values without the spaces around them.
_FIELD = re.compile(
    rb"(?im)^(content-length|content-type|transfer-encoding|expect|connection):"
    rb"[ \t]*([^\r\n]*?)[ \t]*\r$"
)


class Incomplete:
    """More bytes may still make a one-click POST of what arrived so far."""


INCOMPLETE = Incomplete()


@dataclass(frozen=True, slots=True)
class OneClickRequest:
    token: str
    version: str  # "1.0" or "1.1"
    keep_alive: bool


def read_one_click(data: bytes) -> OneClickRequest | Incomplete | None:
    """The one-click POST `data` holds whole; INCOMPLETE if it may still become one;
    None if it never will (another request, or a form of it left to waitress)."""
    head = _HEAD.match(data)
    if head is None:
        return _maybe(data)
    if head.end() > MAX_HEAD:
        return None
    headers: dict[bytes, bytes] = {}
    for name, value in _FIELD.findall(head.group(3)):
        key = name.lower()
        if key in headers:
            return None
        headers[key] = value
    if b"transfer-encoding" in headers or b"expect" in headers:
        return None
    length_text = headers.get(b"content-length", b"0")
    if not length_text.isdigit() or len(length_text) > 4 or int(length_text) > MAX_BODY:
        return None
    start = head.end()
    stop = start + int(length_text)
    if len(data) < stop:
        return INCOMPLETE
    if len(data) > stop:  # a second request behind the first: waitress keeps them in order
        return None
    if not _one_click_body(headers.get(b"content-type", b""), data[start:stop]):
        return None
    connection = headers.get(b"connection", b"").lower()
    if connection not in (b"", b"close", b"keep-alive"):
        return None
    version = head.group(2).decode("ascii")
    keep_alive = connection != b"close" if version == "1.1" else connection == b"keep-alive"
    return OneClickRequest(head.group(1).decode("ascii"), version, keep_alive)


def _maybe(data: bytes) -> Incomplete | None:
    """For bytes that are not a whole head of a one-click: whether more could make one."""
    if b"\r\n\r\n" in data or len(data) > MAX_HEAD or not data.startswith(_PREFIX[: len(data)]):
        return None
    # a bare CR or LF is read differently by different servers: waitress decides
    bare = data.replace(b"\r\n", b"").removesuffix(b"\r")
    return None if b"\r" in bare or b"\n" in bare else INCOMPLETE


def _one_click_body(content_type: bytes, body: bytes) -> bool:
    """Whether Flask would read `body` as a one-click's (no page form fields in it)."""
    kind = content_type.partition(b";")[0].strip().lower()
    if kind == b"multipart/form-data":
        return False
    if kind != b"application/x-www-form-urlencoded" or body == ONE_CLICK:
        return True  # Flask reads no form from other bodies
    names = {k for k, _ in parse_qsl(body.decode("latin-1"), keep_blank_values=True)}
    return not names & PAGE_FIELDS


def answer(
    request: OneClickRequest,
    status: str,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    date: str,
    server: str,
) -> bytes:
    """The response as waitress writes it: status line, then the headers sorted by name
    with Content-Length, Connection, Server and Date added as waitress adds them."""
    lines = [*headers, ("Content-Length", str(len(body))), ("Server", server), ("Date", date)]
    if not request.keep_alive:
        lines.append(("Connection", "close"))
    elif request.version == "1.0":
        lines.append(("Connection", "Keep-Alive"))
    lines.sort(key=lambda pair: pair[0])
    text = "".join(f"{name}: {value}\r\n" for name, value in lines)
    return f"HTTP/{request.version} {status}\r\n{text}\r\n".encode("latin-1") + body
