"""The outbox transport: each message as a file, for the demo, previews and tests.

A file is exactly what SMTP would send (digest.mime builds both). It is named after its
delivery, so sending a delivery again replaces its file instead of adding a second one,
and it is written to a temporary file first and renamed, so a crash never leaves half a
message. `close()` writes index.html, linking every message in the folder.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Callable
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import default
from pathlib import Path

from digest.dkim import DkimKey
from digest.errors import TransportError
from digest.mime import build_message, message_bytes, personalize
from digest.transports.base import OutgoingEmail, Recipient, SendResult

INDEX = "index.html"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


class OutboxTransport:
    """Writes `<delivery_id:06d>-<email>.eml` (and `.html` for a browser) into `folder`."""

    name = "outbox"

    def __init__(
        self, folder: Path, now: Callable[[], datetime], *, dkim: DkimKey | None = None
    ) -> None:
        self.folder = Path(folder)
        self.now = now
        self.dkim = dkim
        self._stems: dict[str, str] | None = None  # delivery prefix -> file stem on disk

    def send(self, email: OutgoingEmail) -> list[SendResult]:
        """One file pair per recipient; a failed write fails that recipient only."""
        if self._stems is None:  # list the folder once per transport, not once per message
            self._stems = {p.stem.split("-", 1)[0]: p.stem for p in self.folder.glob("*.eml")}
        return [self._send_one(email, r) for r in email.recipients]

    def _send_one(self, email: OutgoingEmail, recipient: Recipient) -> SendResult:
        message = build_message(email, recipient, now=self.now())
        stem = message_stem(recipient)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(self.folder / f"{stem}.eml", message_bytes(message, self.dkim))
            html_part = personalize(email.html, recipient).encode("utf-8")
            write_atomic(self.folder / f"{stem}.html", html_part)
            self._remove_stale(recipient.delivery_id, stem)
        except OSError as exc:
            reason = f"outbox: cannot write {self.folder / stem}.eml: {exc.strerror or exc}"
            return SendResult(recipient.delivery_id, ok=False, error=reason, retryable=False)
        return SendResult(recipient.delivery_id, ok=True, message_id=str(message["Message-ID"]))

    def _remove_stale(self, delivery_id: int, stem: str) -> None:
        # The same delivery re-sent to a changed address keeps one file, not two.
        assert self._stems is not None
        prefix = f"{delivery_id:06d}"
        old = self._stems.get(prefix)
        if old is not None and old != stem:
            for suffix in (".eml", ".html"):
                (self.folder / f"{old}{suffix}").unlink(missing_ok=True)
        self._stems[prefix] = stem

    def close(self) -> None:
        """Write index.html listing every message in the folder, earlier runs' included."""
        if not self.folder.is_dir():
            return
        try:
            write_atomic(self.folder / INDEX, index_page(self.folder).encode("utf-8"))
        except OSError as exc:
            raise TransportError(
                f"outbox: cannot write {self.folder / INDEX}: {exc.strerror or exc}",
                retryable=False,
            ) from None


def message_stem(recipient: Recipient) -> str:
    """`000042-ana@example.com`: sorts by delivery, safe on every file system."""
    return f"{recipient.delivery_id:06d}-{_UNSAFE.sub('_', recipient.email)}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename over it: all or nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def index_page(folder: Path) -> str:
    """An HTML table of every .eml in `folder`: To, Subject, Date and links to both files."""
    parser = BytesHeaderParser(policy=default)
    rows = []
    for eml in sorted(folder.glob("*.eml")):
        with open(eml, "rb") as f:
            headers = parser.parse(f)
        cells = [str(headers.get(h, "")) for h in ("To", "Subject", "Date")]
        view = eml.with_suffix(".html")
        links = [f'<a href="{html.escape(eml.name)}">.eml</a>']
        if view.exists():
            links.insert(0, f'<a href="{html.escape(view.name)}">view</a>')
        rows.append(
            "<tr>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + f"<td>{' · '.join(links)}</td></tr>"
        )
    count = len(rows)
    body = "\n".join(rows) or '<tr><td colspan="4">No messages yet.</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Outbox: {count} messages</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2rem; color: #1f2937; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #e5e7eb; }}
th {{ background: #f3f4f6; }}
a {{ color: #1d4ed8; }}
</style></head>
<body>
<h1>Outbox</h1>
<p>{count} messages in {html.escape(str(folder))}</p>
<table>
<thead><tr><th>To</th><th>Subject</th><th>Date</th><th>Open</th></tr></thead>
<tbody>
{body}
</tbody>
</table>
</body></html>
"""
