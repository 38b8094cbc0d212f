"""One content's MIME message built and encoded once; per recipient, only what is personal.

`digest.mime.build_message` builds every message from nothing: for an 80 KB digest that is
≈ 8 ms, most of it quoted-printable encoding the same HTML again. A `PreparedEmail` splits
each part (text, html) into lines and encodes once the runs of lines that hold no
placeholder; per recipient it encodes only the lines that do (the signed links), folds
only the headers that differ, and picks each part's transfer encoding by the same rule
the email package applies to the whole text. Quoted-printable, 7bit and 8bit encode line
by line, so the joined pieces are exactly the bytes `build_message` + `message_bytes`
write for that recipient (with this content's MIME boundary and the Message-ID it
returns). Anything this does not cover (base64, a part of ten lines or fewer, an address
that needs SMTPUTF8, a value with a line break, a boundary that a link happens to
contain) goes through `build_message` instead, so the bytes are the same either way.
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import quoprimime
from email.generator import Generator
from email.headerregistry import Address
from email.message import EmailMessage
from typing import cast

from digest.dkim import DkimKey, Signer
from digest.mime import (
    POLICY,
    RAW_HEADERS,
    build_message,
    fold_raw,
    header_items,
    message_bytes,
)
from digest.transports.base import OutgoingEmail, Recipient

_MAX_LINE = POLICY.max_line_length or 78  # where the email package stops sending 7bit/8bit
_SNIFF_LINES = 10  # the email package compares QP and base64 on the first 10 lines
# Words of letters, digits and <>@._+-/ with single spaces: no quoting, comment,
# encoded word or list separator that the header parser could rewrite.
_PLAIN = re.compile(r"[A-Za-z0-9<>@._+/-]+(?: [A-Za-z0-9<>@._+/-]+)*")
_PIECE = _MAX_LINE - 1  # a QP piece and its soft break
# The email package's boundaries: "=" * 15, 19 digits, "==" (then ".N" if the text holds it).
_BOUNDARY = re.compile(r"={15}\d{19}==")
_STAND_IN = "=" * 15 + "7" * 19 + "=="
# The table body_encode translates with (private, but the parity tests would catch a change).
_QP_MAP = quoprimime._QUOPRI_BODY_ENCODE_MAP  # type: ignore[attr-defined]
_QP_RARE = re.compile(  # what the table changes, but `=`
    "[^=" + re.escape("".join(chr(c) for c in range(256) if _QP_MAP[c] == chr(c))) + "]"
)


@dataclass(frozen=True)
class Message:
    """One recipient's message: `head` (header lines) + CRLF + the `body` chunks."""

    message_id: str
    head: bytes
    body: tuple[bytes, ...]

    def as_bytes(self) -> bytes:
        return self.head + b"\r\n" + b"".join(self.body)


class _Part:
    """One text part: its lines, which of them hold a placeholder, and the rest encoded once
    per transfer encoding."""

    def __init__(self, source: str, keys: Sequence[bytes]) -> None:
        self.keys = keys
        self.lines = source.encode("utf-8").splitlines()
        self.personal = [i for i, line in enumerate(self.lines) if _has_any(line, keys)]
        mine = set(self.personal)
        static = [line for i, line in enumerate(self.lines) if i not in mine]
        self.static_max = max((len(x) for x in static), default=0)
        self.static_ascii = all(x.isascii() for x in static)
        self._runs: list[list[bytes]] = []
        start = 0
        for i in [*self.personal, len(self.lines)]:
            self._runs.append(self.lines[start:i])
            start = i + 1
        self._encoded: dict[str, list[bytes]] = {}
        self._sniff: str | None = None
        self.heads = [_Personal(self.lines[i], keys) for i in self.personal]

    def runs(self, cte: str) -> list[bytes]:
        """The runs of placeholder-free lines, encoded in `cte` (computed once each)."""
        found = self._encoded.get(cte)
        if found is None:
            found = self._encoded[cte] = [_encode(run, cte) for run in self._runs]
        return found

    def body(self, values: Sequence[bytes]) -> tuple[str, list[bytes], list[bytes]] | None:
        """(transfer encoding, body chunks, the chunks of them that are this recipient's) with
        `values` for the keys, or None to build it the slow way."""
        tails = [head.tail(values) for head in self.heads]
        if any(t is None for t in tails):
            return None
        mine = cast(list[bytes], tails)
        cte = self._choose(mine)
        if cte is None:
            return None
        runs = self.runs(cte)
        chunks, personal = [runs[0]], []
        for head, tail, run in zip(self.heads, mine, runs[1:], strict=True):
            if cte == "quoted-printable":
                encoded = head.encode(tail, values)
                chunks.append(head.pieces)
            else:
                encoded = head.head + tail + b"\r\n"
            chunks += [encoded, run]
            personal.append(encoded)
        return cte, chunks, personal

    def _choose(self, tails: list[bytes]) -> str | None:
        """`email.contentmanager._encode_text`'s choice for these lines; None for base64 or
        a short QP part (which it encodes differently)."""
        lengths = [len(h.head) + len(t) for h, t in zip(self.heads, tails, strict=True)]
        if max([self.static_max, *lengths]) <= _MAX_LINE:
            ascii_only = self.static_ascii and all(
                h.head.isascii() and t.isascii() for h, t in zip(self.heads, tails, strict=True)
            )
            return "7bit" if ascii_only else "8bit"
        if len(self.lines) <= _SNIFF_LINES:
            return None
        if self.personal and self.personal[0] < _SNIFF_LINES:
            lines = list(self.lines[:_SNIFF_LINES])
            for i, head, tail in zip(self.personal, self.heads, tails, strict=True):
                if i < _SNIFF_LINES:
                    lines[i] = head.head + tail
            return _sniff(lines)
        if self._sniff is None:
            self._sniff = _sniff(self.lines[:_SNIFF_LINES]) or ""
        return self._sniff or None


class _Personal:
    """A line that holds a placeholder. MJML writes the whole HTML on a few lines, so such
    a line may be 60 KB long with the links at its end: what comes before its first
    placeholder is the same for everyone, so it is neither copied per recipient nor
    encoded again. Its quoted-printable pieces are cut once, and the wrap of the rest
    resumes where they end (quoprimime.body_encode's loop is position-independent). The
    rest is encoded a character at a time, so its text between placeholders is encoded
    once too, and per recipient only the values are."""

    def __init__(self, line: bytes, keys: Sequence[bytes]) -> None:
        self.keys = keys
        self.at = min(i for i in (line.find(k) for k in keys) if i >= 0)
        # Replacing one key may complete another that starts up to len(key) - 1 bytes
        # before `at`: personalize from there, as digest.mime.personalize would.
        cut = max(0, self.at - max(len(k) for k in keys) + 1)
        self.head, self._tail, self._kept = line[:cut], line[cut:], line[cut : self.at]
        translated = _qp(line[: self.at])
        pieces, start = _wrap(translated, whole=False)
        self.pieces = _crlf(pieces)
        self._left = translated[start:]
        self._template = _template(line[self.at :], keys)

    def tail(self, values: Sequence[bytes]) -> bytes | None:
        """The line from `self.head` on, personalized; None if a replacement reached back
        before the first placeholder (left to the slow path)."""
        tail = self._tail
        for key, value in zip(self.keys, values, strict=True):
            tail = tail.replace(key, value)
        return tail if tail.startswith(self._kept) else None

    def encode(self, tail: bytes, values: Sequence[bytes]) -> bytes:
        """The QP pieces after `self.pieces` of the personalized line (`tail`, personalized
        with `values`), CRLF-ended."""
        rest = tail[len(self._kept) :]
        raw, encoded = [], []
        for text, text_qp, key in self._template:
            raw.append(text)
            encoded.append(text_qp)
            if key is not None:
                raw.append(values[key])
                encoded.append(_qp(values[key]))
        # the template's fill is the replacements' result unless a value holds a key
        translated = "".join(encoded) if b"".join(raw) == rest else _qp(rest)
        pieces, _ = _wrap(self._left + translated)
        return _crlf(pieces)


def _template(rest: bytes, keys: Sequence[bytes]) -> list[tuple[bytes, str, int | None]]:
    """`rest` as (text, its QP translation, the key that follows it or None) runs."""
    out: list[tuple[bytes, str, int | None]] = []
    at = 0
    while True:
        found = [(i, n) for n, k in enumerate(keys) if (i := rest.find(k, at)) >= 0]
        if not found:
            out.append((rest[at:], _qp(rest[at:]), None))
            return out
        i, n = min(found)
        out.append((rest[at:i], _qp(rest[at:i]), n))
        at = i + len(keys[n])


def _qp(data: bytes) -> str:
    """quoprimime's character translation (before the wrap), without looking up each
    character: `=` (the one common in HTML) by replace, the rarer others one by one."""
    return _QP_RARE.sub(_qp_char, data.decode("latin-1").replace("=", "=3D"))


def _qp_char(match: re.Match[str]) -> str:
    return cast(str, _QP_MAP[ord(match.group())])


def _wrap(line: str, *, whole: bool = True) -> tuple[list[str], int]:
    """quoprimime.body_encode's cutting of one translated line into soft-broken pieces.

    Not `whole`: only the pieces that lie in `line` however much text follows it, and
    where the next piece starts."""
    out: list[str] = []
    start = 0
    last = len(line) - 1 - _MAX_LINE
    while start <= last:
        stop = start + _PIECE
        if line[stop - 2] == "=":
            out.append(line[start : stop - 1])
            start = stop - 2
        elif line[stop - 1] == "=":
            out.append(line[start:stop])
            start = stop - 1
        else:
            out.append(line[start:stop] + "=")
            start = stop
    if not whole:
        return out, start
    if line and line[-1] in " \t":
        room = start - last
        if room >= 3:
            tail = quoprimime.quote(line[-1])
        elif room == 2:
            tail = line[-1] + "=\n"
        else:
            tail = "=\n" + quoprimime.quote(line[-1])
        out.append(line[start:-1] + tail)
    else:
        out.append(line[start:])
    return out, start


def _crlf(pieces: list[str]) -> bytes:
    """Pieces as lines on the wire (a piece may hold a soft break of its own)."""
    return "".join(p + "\n" for p in pieces).replace("\n", "\r\n").encode("ascii")


def _has_any(line: bytes, keys: Sequence[bytes]) -> bool:
    return any(k in line for k in keys)


def _sniff(lines: Sequence[bytes]) -> str | None:
    """QP when it is not longer than base64 on these lines (as the email package decides)."""
    sniff = b"\r\n".join(lines) + b"\r\n"
    qp = quoprimime.body_encode(sniff.decode("latin-1"), _MAX_LINE)
    return None if len(qp) > len(binascii.b2a_base64(sniff)) else "quoted-printable"


def _encode(lines: Sequence[bytes], cte: str) -> bytes:
    """Whole lines as the generator writes them in `cte`, CRLF-ended."""
    if not lines:
        return b""
    if cte == "quoted-printable":  # quoprimime.body_encode, line by line
        return _crlf([piece for line in lines for piece in _wrap(_qp(line))[0]])
    return b"\r\n".join(lines) + b"\r\n"


class PreparedEmail:
    """An OutgoingEmail's content, ready to be stamped per recipient (see the module doc)."""

    def __init__(self, email: OutgoingEmail, *, dkim: DkimKey | None = None) -> None:
        self.email = email
        self.dkim = dkim
        self._signer = Signer(dkim) if dkim is not None else None
        first = email.recipients[0] if email.recipients else None
        self.keys = tuple(first.substitutions) if first else ()
        keys = [k.encode("utf-8") for k in self.keys]
        self._usable = all(keys) and not any("\r" in k or "\n" in k for k in self.keys)
        self._keys = keys if self._usable else []
        self._parts = (_Part(email.text, self._keys), _Part(email.html, self._keys))
        static = [b"".join(p.runs("quoted-printable")) for p in self._parts]
        self.boundary = Generator._make_boundary(b"\n".join(static).decode("latin-1"))  # type: ignore[attr-defined]
        self._delimiter = b"--" + self.boundary.encode("ascii")
        self._frames: dict[tuple[str, str], tuple[bytes, bytes, bytes, bytes] | None] = {}
        self._folded: dict[str, tuple[str, bytes]] = {}
        self.rebuilt = 0  # messages built whole (see the module docstring)

    def message(self, recipient: Recipient, *, now: datetime) -> Message:
        """`recipient`'s message, the bytes `build_message` + `message_bytes` would give."""
        fast = self._fast(recipient, now)
        return fast if fast is not None else self._slow(recipient, now)

    def _fast(self, recipient: Recipient, now: datetime) -> Message | None:
        addresses = self.email.from_email + recipient.email
        if not self._usable or tuple(recipient.substitutions) != self.keys:
            return None
        values = [v.encode("utf-8") for v in recipient.substitutions.values()]
        if not addresses.isascii() or any(b"\r" in v or b"\n" in v for v in values):
            return None
        items = header_items(self.email, recipient, now=now)
        names = [n.lower() for n, _ in items]
        mime_named = any(n == "mime-version" or n.startswith("content-") for n in names)
        if len(set(names)) != len(names) or mime_named:
            return None  # a duplicate or MIME header: let the email package place it
        text, html = (p.body(values) for p in self._parts)
        if text is None or html is None:
            return None
        frame = self._frame(text[0], html[0])
        if frame is None:
            return None
        mime, opening, middle, closing = frame
        if any(self._delimiter in c for c in text[2] + html[2]):
            return None  # a personal value holds the boundary (the shared text was checked)
        head = b"".join(self._fold(name, value) for name, value in items) + mime
        body = (opening, *text[1], middle, *html[1], closing)
        if self._signer is not None:
            head = self._signer.sign(head, body) + head
        return Message(str(items[0][1]), head, body)

    def _fold(self, name: str, value: str | Address) -> bytes:
        """`Name: value` CRLF as the generator writes it. Most headers repeat from one
        recipient to the next (From, Subject, List-Id, Date within a second): each name
        keeps its last value folded."""
        text = str(value)
        last = self._folded.get(name)
        if last is not None and last[0] == text:
            return last[1]
        if name.lower() in RAW_HEADERS and text.isascii() and "=?" not in text:
            folded = fold_raw(name, text).encode("ascii")  # what POLICY.fold_binary calls
        elif _PLAIN.fullmatch(text) and len(name) + 2 + len(text) <= _MAX_LINE:
            # Plain words that fit on the line: the header parser keeps every character
            # and the folder writes the line as it stands (tested against it).
            folded = f"{name}: {text}\r\n".encode("ascii")
        else:
            folded = POLICY.fold_binary(*POLICY.header_store_parse(name, value))
        self._folded[name] = (text, folded)
        return folded

    def _frame(self, text_cte: str, html_cte: str) -> tuple[bytes, bytes, bytes, bytes] | None:
        """The MIME headers and the part boundaries and headers around the two bodies, for
        these transfer encodings: written once by the email package itself."""
        key = (text_cte, html_cte)
        if key not in self._frames:
            self._frames[key] = self._skeleton(text_cte, html_cte)
        return self._frames[key]

    def _skeleton(self, text_cte: str, html_cte: str) -> tuple[bytes, bytes, bytes, bytes] | None:
        stand_in = _STAND_IN if _BOUNDARY.fullmatch(self.boundary) else self.boundary
        mime, opening, middle, closing = (
            x.replace(stand_in.encode("ascii"), self.boundary.encode("ascii"))
            for x in _skeleton(text_cte, html_cte, stand_in)
        )
        for part, cte in zip(self._parts, (text_cte, html_cte), strict=True):
            shared = part.runs(cte) + [h.pieces for h in part.heads]
            if any(self._delimiter in c for c in shared):
                return None
        return mime, opening, middle, closing

    def _slow(self, recipient: Recipient, now: datetime) -> Message:
        self.rebuilt += 1
        message = build_message(self.email, recipient, now=now)
        utf8 = not (self.email.from_email + recipient.email).isascii()
        data = message_bytes(message, self.dkim, utf8=utf8)
        head, _, body = data.partition(b"\r\n\r\n")
        return Message(str(message["Message-ID"]), head + b"\r\n", (body,))


@functools.lru_cache(maxsize=32)
def _skeleton(text_cte: str, html_cte: str, boundary: str) -> tuple[bytes, bytes, bytes, bytes]:
    """The MIME headers and the frame around the two parts, as the email package writes
    them. Written with a stand-in boundary of the usual shape (digits for digits: the
    same folding), it serves every content whose boundary has that shape."""
    marks = (b"@@digest-text-part@@", b"@@digest-html-part@@")
    msg = EmailMessage(policy=POLICY)
    msg.set_content(marks[0].decode() + "\n", subtype="plain", charset="utf-8", cte=text_cte)
    msg.add_alternative(marks[1].decode() + "\n", subtype="html", charset="utf-8", cte=html_cte)
    msg.set_boundary(boundary)
    data = msg.as_bytes(policy=POLICY)
    mime, _, rest = data.partition(b"\r\n\r\n")
    opening, _, rest = rest.partition(marks[0] + b"\r\n")
    middle, _, closing = rest.partition(marks[1] + b"\r\n")
    return mime + b"\r\n", opening, middle, closing
