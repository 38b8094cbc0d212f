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
_PREFIX = b"POST /u/"
_TARGET = re.compile(rb"/u/([A-Za-z0-9_.\-]+)")  # a token's alphabet: nothing to unquote
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}
# Headers that decide how the request is read or answered; a second copy of one goes to
# waitress rather than being guessed at.
_WATCHED = frozenset(
    {b"content-length", b"content-type", b"transfer-encoding", b"expect", b"connection"}
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
    if not data.startswith(_PREFIX[: len(data)]):
        return None
    end = data.find(b"\r\n\r\n")
    head = data[: end if end >= 0 else MAX_HEAD + 1]
    # a bare CR or LF is read differently by different servers: waitress decides
    bare = head.replace(b"\r\n", b"").removesuffix(b"\r")
    if b"\r" in bare or b"\n" in bare:
        return None
    if end < 0:
        return INCOMPLETE if len(data) <= MAX_HEAD else None
    if end > MAX_HEAD:
        return None
    line, *lines = head.split(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"POST" or parts[2] not in _VERSIONS:
        return None
    target = _TARGET.fullmatch(parts[1])
    if target is None:
        return None
    headers: dict[bytes, bytes] = {}
    for header in lines:
        name, colon, value = header.partition(b":")
        if not colon or not _NAME.fullmatch(name):
            return None  # also a folded line, which starts with a space
        key = name.lower()
        if key in _WATCHED:
            if key in headers:
                return None
            headers[key] = value.strip(b" \t")
    if b"transfer-encoding" in headers or b"expect" in headers:
        return None
    length_text = headers.get(b"content-length", b"0")
    if not length_text.isdigit() or len(length_text) > 4 or int(length_text) > MAX_BODY:
        return None
    start = end + 4
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
    version = _VERSIONS[parts[2]]
    keep_alive = connection != b"close" if version == "1.1" else connection == b"keep-alive"
    return OneClickRequest(target.group(1).decode("ascii"), version, keep_alive)


def _one_click_body(content_type: bytes, body: bytes) -> bool:
    """Whether Flask would read `body` as a one-click's (no page form fields in it)."""
    kind = content_type.partition(b";")[0].strip().lower()
    if kind == b"multipart/form-data":
        return False
    if kind != b"application/x-www-form-urlencoded":
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
