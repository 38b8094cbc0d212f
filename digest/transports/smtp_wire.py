"""One message over an open SMTP connection, as raw bytes, in as few round trips as allowed.

smtplib sends each command and waits for its answer: MAIL, RCPT, DATA and the body are
four round trips per message, and every address is parsed again on the way. Here, when
the server offers PIPELINING (RFC 2920) and the setting allows it, MAIL, RCPT and DATA
go out in one write and their three answers are read after it; the body follows once
DATA is answered 354, dot-stuffed, in one write. Without PIPELINING each command waits
for its answer, as smtplib does. The message comes in chunks that each begin a line, so
each is dot-stuffed on its own, and the long ones (a content's shared parts) only once:
`bytes.replace` needs ≈ 0.4 ms to stuff 80 KB, more than the rest of a message costs.

smtplib still opens, secures and logs in the connection (rare, and its errors are the
ones wanted there); the messages go over its socket, their answers read from its buffered
reader. What a failure proves is kept apart, as the transport needs it:

- `Refused`: the server answered no (its code and text): it took nothing;
- `Dropped`: the connection went away before the body went out: it took nothing;
- `InDoubt`: the connection went away after the body went out, before the answer.
"""

from __future__ import annotations

import re
import smtplib
import socket
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

Steps = Generator[socket.socket, None, None]  # yields the socket whenever an answer is due

_MAX_REPLY_LINE = 8192  # smtplib's limit on one reply line
SEND_BUFFER = 1 << 20  # room for whole messages, so a write returns while the server reads
_SHARED_MIN = 2048  # chunks at least this long are stuffed once and kept
_KEPT_BYTES = 32 << 20  # at most this much stuffed text kept
_PLAIN_ADDRESS = re.compile(r"[^<>\s\"(),:;\[\]\\]+@[^<>\s\"(),:;\[\]\\]+")


@dataclass(frozen=True)
class Reply:
    code: int
    text: bytes


class Refused(Exception):
    """The server refused the message: it took nothing. `reply` says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"{reply.code} {reply.text.decode('utf-8', 'replace')}")
        self.reply = reply


class Dropped(Exception):
    """The connection went away before the body went out; the message may go again."""


class InDoubt(Exception):
    """The connection went away after the body went out, before the server's answer."""


class _Closed(Exception):
    """The server closed the connection (end of stream while an answer was due)."""


class DotStuffer:
    """RFC 5321 4.5.2 transparency (a line that starts with a dot gets another), chunk by
    chunk; long chunks are kept, since they are the ones many messages share."""

    def __init__(self) -> None:
        self._stuffed: dict[bytes, bytes] = {}
        self._kept = 0

    def __call__(self, chunk: bytes) -> bytes:
        if len(chunk) < _SHARED_MIN:
            return _stuff(chunk)
        found = self._stuffed.get(chunk)
        if found is None:
            found = _stuff(chunk)
            if self._kept + len(found) > _KEPT_BYTES:
                self._stuffed.clear()
                self._kept = 0
            self._stuffed[chunk] = found
            self._kept += len(found)
        return found


def _stuff(chunk: bytes) -> bytes:
    return (b"." + chunk if chunk.startswith(b".") else chunk).replace(b"\n.", b"\n..")


class Wire:
    """The message-sending half of an open smtplib connection (see the module docstring)."""

    def __init__(self, conn: smtplib.SMTP, *, pipelining: bool, stuffer: DotStuffer) -> None:
        assert conn.sock is not None, "the connection must be open"
        self.conn = conn
        self.pipelining = pipelining and conn.has_extn("pipelining")
        self._size = conn.has_extn("size")
        self._smtputf8 = conn.has_extn("smtputf8")
        if conn.file is None:  # smtplib makes it on its first answer; share it
            conn.file = conn.sock.makefile("rb")
        self._sock = conn.sock
        # The default (16 KB, grown slowly) is smaller than one message: writing the body
        # would wait on the server's reading instead of going on with another connection.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._file: BinaryIO = conn.file
        self._stuffer = stuffer

    def send(self, sender: str, to: str, chunks: Sequence[bytes]) -> Steps:
        """Send the message `chunks` (each begins a line; CRLF line ends) from `sender` to
        `to`; raises Refused, Dropped, InDoubt, or smtplib.SMTPNotSupportedError for an
        address the server cannot take.

        A generator: it yields the socket each time it is about to wait for an answer, so
        one thread can keep several connections busy (resume it once the socket is
        readable, or throw TimeoutError into it). Iterated through, it simply blocks."""
        options = b""
        if not (sender + to).isascii():
            if not self._smtputf8:
                raise smtplib.SMTPNotSupportedError(
                    "the address needs SMTPUTF8, which the server does not offer"
                )
            options = b" SMTPUTF8 BODY=8BITMIME"
        if self._size:
            options += b" SIZE=%d" % sum(len(c) for c in chunks)
        mail = b"MAIL FROM:" + _quote(sender) + options + b"\r\n"
        rcpt = b"RCPT TO:" + _quote(to) + b"\r\n"
        try:
            yield from self._envelope(mail, rcpt)
        except (_Closed, OSError) as exc:
            raise Dropped(_why(exc)) from None
        stuffed = [self._stuffer(c) for c in chunks if c]
        stuffed.append(b".\r\n" if stuffed and stuffed[-1].endswith(b"\r\n") else b"\r\n.\r\n")
        try:
            self._sock.sendall(b"".join(stuffed))
            yield self._sock
            reply = self._reply()
        except (_Closed, OSError) as exc:
            raise InDoubt(_why(exc)) from None
        if reply.code != 250:
            raise Refused(reply)

    def _envelope(self, mail: bytes, rcpt: bytes) -> Steps:
        """MAIL, RCPT and DATA, answered 354; else Refused (the server is left ready for the
        next message)."""
        commands = ((mail, (250,)), (rcpt, (250, 251)), (b"DATA\r\n", (354,)))
        replies: list[Reply] = []
        if self.pipelining:
            self._sock.sendall(mail + rcpt + b"DATA\r\n")
            yield self._sock
            replies = [self._reply() for _ in commands]  # sent together: no further wait
        else:
            for command, ok in commands:
                self._sock.sendall(command)
                yield self._sock
                replies.append(self._reply())
                if replies[-1].code not in ok:
                    break
        refused = [r for r, (_, ok) in zip(replies, commands, strict=False) if r.code not in ok]
        if not refused:
            return
        if replies[-1].code == 354:
            # DATA taken although the envelope was refused: end the empty message at once
            self._sock.sendall(b".\r\n")
            self._reply()
        if refused[0].code != 421 and replies[0].code == 250:
            self._sock.sendall(b"RSET\r\n")  # forget the sender taken (421: it is closing)
            self._reply()
        raise Refused(refused[0])

    def _reply(self) -> Reply:
        """One answer, multi-line or not."""
        lines = []
        while True:
            line = self._file.readline(_MAX_REPLY_LINE + 1)
            if not line:
                raise _Closed("the server closed the connection")
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                break
        code = int(line[:3]) if line[:3].isdigit() else -1  # as smtplib reads a garbled one
        return Reply(code, b"\n".join(lines))


def _quote(address: str) -> bytes:
    """`<address>` as MAIL and RCPT take it; smtplib's parsing only for unusual addresses."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("utf-8") + b">"
    return smtplib.quoteaddr(address).encode("utf-8")


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
