"""Preflight: what a reader's inbox will make of an edition, checked before it is sent.

Renders the edition as recipients get it (real-length signed links, the headers SMTP and
the outbox write) and reports errors, which stop a send, and warnings, which are printed.
DNS checks (SPF, DMARC, the published DKIM key) run only when a resolver answers; when
none does, they are reported as skipped, never as passed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import urlsplit

from digest import dkim as dkim_mod
from digest.compose import Row, recipients
from digest.config import Config
from digest.editions import Edition
from digest.mime import build_message, message_bytes
from digest.render import GMAIL_CLIP_BYTES, compile_template, render_email
from digest.tokens import LinkSigner
from digest.transports.base import OutgoingEmail

Level = Literal["error", "warning", "ok", "skipped"]
SUBJECT_WARN = 70  # most inbox list views cut subjects around 40-70 characters
SUBJECT_MAX = 150
NEAR_CLIP = int(GMAIL_CLIP_BYTES * 0.9)
SHORTENERS = frozenset(
    [
        "bit.ly",
        "t.co",
        "tinyurl.com",
        "goo.gl",
        "ow.ly",
        "is.gd",
        "buff.ly",
        "rebrand.ly",
        "cutt.ly",
        "shorturl.at",
        "tiny.cc",
        "lnkd.in",
        "rb.gy",
        "t.ly",
        "s.id",
    ]
)
VAGUE = frozenset({"click here", "here", "click", "read more", "more", "link", "this", "go"})
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{%|%\}|-unsubscribe_url-|-preferences_url-|\{[a-z_]+\}")


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    message: str

    def line(self) -> str:
        return f"{self.level:<8} {self.check}: {self.message}"


@dataclass(frozen=True)
class Report:
    edition: str
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, object]:
        return {
            "edition": self.edition,
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [f.__dict__ for f in self.findings],
        }


class DnsUnavailable(Exception):
    """No resolver answered: the DNS checks cannot say anything."""


# name -> TXT strings (empty when the name has none); raises DnsUnavailable
TxtLookup = Callable[[str], list[str]]


def dns_lookup(
    nameservers: Sequence[str] | None = None, *, port: int = 53, timeout: float = 3.0
) -> TxtLookup:
    """TXT lookups through dnspython (the system's resolvers unless `nameservers`)."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=nameservers is None)
    if nameservers is not None:
        resolver.nameservers = list(nameservers)
        resolver.port = port
    resolver.lifetime = timeout

    def lookup(name: str) -> list[str]:
        try:
            answer = resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers, OSError) as exc:
            raise DnsUnavailable(str(exc) or type(exc).__name__) from None
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    return lookup


class _Page(HTMLParser):
    """Every link (href, accessible text) and image (src, alt) of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.images: list[tuple[str, str | None]] = []
        self._open: list[list[str]] = []  # href, aria-label, text so far

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a":
            self._open.append([a.get("href") or "", a.get("aria-label") or "", ""])
        elif tag == "img":
            self.images.append((a.get("src") or "", a.get("alt")))
            if self._open and a.get("alt"):
                self._open[-1][2] += f" {a['alt']}"

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][2] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open:
            href, label, text = self._open.pop()
            self.links.append((href, " ".join((label or text).split())))


def _links(html: str) -> list[Finding]:
    page = _Page()
    page.feed(html)
    out: list[Finding] = []
    for href, text in page.links:
        shown = f"{href[:80]!r}" + (f" ({text[:40]!r})" if text else "")
        parts = urlsplit(href) if href else None
        if parts is None or not parts.scheme:
            out.append(Finding("error", "links", f"relative or empty link {shown}"))
        elif parts.scheme == "mailto":
            continue
        elif parts.scheme not in ("http", "https") or not parts.hostname or " " in href:
            out.append(Finding("error", "links", f"malformed link {shown}"))
        elif parts.hostname.lower() in SHORTENERS:
            out.append(
                Finding("warning", "links", f"shortened link {shown}: spam filters distrust them")
            )
        elif parts.scheme == "http":
            out.append(Finding("warning", "links", f"link without https {shown}"))
        if text.lower().strip(" .→›»") in VAGUE or not text:
            out.append(
                Finding("warning", "links", f"vague link text for {shown}: say where it goes")
            )
    for src, alt in page.images:
        if not alt or not alt.strip():
            out.append(Finding("warning", "images", f"image without alt text: {src[:80]!r}"))
    if not out:
        out.append(Finding("ok", "links", f"{len(page.links)} links and {len(page.images)} images"))
    return out


# the reader whose links the preflight renders with
_SAMPLE = Row(999_999, 999_999, "preflight@example.com", "Preflight Reader", "A", "")


def run_preflight(
    config: Config,
    edition: Edition,
    *,
    secret: str,
    topic_mixes: Sequence[Sequence[str]] = (),
    dns: TxtLookup | None = None,
    now: datetime | None = None,
) -> Report:
    """Check `edition` for every topic mix (default: all its sections) and the sender's DNS.

    `dns=None` skips the DNS checks (and says so); pass `dns_lookup()` to run them.
    """
    findings: list[Finding] = []
    spec = config.digest(edition.digest)
    compiled = compile_template(config.resolve(config.templates_dir), spec.template)
    signer = LinkSigner(config.site.base_url, secret)
    (recipient,) = recipients([_SAMPLE], links=signer, edition_key=edition.key)
    dkim_key = dkim_mod.load_key(config)
    mixes = [tuple(m) for m in topic_mixes] or [tuple(edition.topics())]
    for n, mix in enumerate(mixes):
        rendered = render_email(compiled, config, edition, mix, links=recipient.substitutions)
        label = "" if len(mixes) == 1 else f" [{'+'.join(mix)}]"
        if n == 0:
            findings += _subject(rendered.subject)
        size = rendered.html_bytes
        if size > GMAIL_CLIP_BYTES:
            findings.append(
                Finding(
                    "error", "size", f"HTML is {size / 1024:.1f} KB{label}: Gmail clips over 102 KB"
                )
            )
        elif size >= NEAR_CLIP:
            findings.append(
                Finding(
                    "warning",
                    "size",
                    f"HTML is {size / 1024:.1f} KB{label}, near Gmail's 102 KB clip",
                )
            )
        else:
            findings.append(
                Finding(
                    "ok", "size", f"HTML is {size / 1024:.1f} KB{label} (Gmail clips at 102 KB)"
                )
            )
        findings += [Finding("warning", "size", w) for w in rendered.warnings if "dropped" in w]
        for part, body in (("html", rendered.html), ("text", rendered.text)):
            left = sorted(set(PLACEHOLDER.findall(body)))
            if left:
                findings.append(
                    Finding(
                        "error",
                        "placeholders",
                        f"unresolved in the {part} part{label}: {', '.join(left)}",
                    )
                )
        findings += _links(rendered.html)
        if n == 0:
            email = OutgoingEmail(
                subject=rendered.subject, html=rendered.html, text=rendered.text,
                from_email=config.sender.address, from_name=config.sender.name,
                reply_to=config.sender.reply_to, recipients=(recipient,),
            )  # fmt: skip
            raw = message_bytes(
                build_message(email, recipient, now=now or datetime.now(UTC)), dkim_key
            )
            findings += _one_click(raw)
            findings += _dkim(raw, dkim_key)
    findings += _dns(config, dkim_key, dns)
    return Report(edition.key, tuple(_dedupe(findings)))


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """Each finding once (a link repeated in every mix is reported once), in order."""
    return list(dict.fromkeys(findings))


def _subject(subject: str) -> list[Finding]:
    if not subject.strip():
        return [Finding("error", "subject", "subject is empty")]
    if PLACEHOLDER.search(subject):
        return [Finding("error", "subject", f"unresolved placeholder in {subject!r}")]
    n = len(subject)
    if n > SUBJECT_MAX:
        return [Finding("error", "subject", f"{n} characters: keep it under {SUBJECT_MAX}")]
    if n > SUBJECT_WARN:
        return [
            Finding("warning", "subject", f"{n} characters: inboxes cut it near {SUBJECT_WARN}")
        ]
    return [Finding("ok", "subject", f"{n} characters")]


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


def _one_click(raw: bytes) -> list[Finding]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    unsubscribe = re.search(
        r"\r\nList-Unsubscribe: <(https?)://([^/>\s:]+)[^>\s]*>\r\n", "\r\n" + head + "\r\n"
    )
    post = "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in "\r\n" + head + "\r\n"
    if not unsubscribe:
        return [Finding("error", "one-click", "no raw List-Unsubscribe: <https://…> header")]
    if not post:
        return [
            Finding("error", "one-click", "no List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        ]
    scheme, host = unsubscribe.groups()
    if scheme != "https":
        # RFC 8058 wants https; a project served on loopback is a local trial, not a send.
        why = "List-Unsubscribe is not https (RFC 8058 wants it)"
        if host in LOOPBACK_HOSTS:
            return [Finding("warning", "one-click", why)]
        return [Finding("error", "one-click", why)]
    return [Finding("ok", "one-click", "List-Unsubscribe and List-Unsubscribe-Post are raw")]


def _dkim(raw: bytes, key: dkim_mod.DkimKey | None) -> list[Finding]:
    if key is None:
        return [
            Finding(
                "warning",
                "dkim",
                "no DKIM key configured (delivery.dkim): SMTP and outbox mail is unsigned",
            )
        ]
    record = key.public_record()
    if not dkim_mod.verify(raw, lambda _name, timeout=5: record):
        return [Finding("error", "dkim", "the signature does not verify with the configured key")]
    missing = [
        h for h in dkim_mod.REQUIRED_HEADERS if h.lower() not in dkim_mod.signed_headers(raw)
    ]
    if missing:
        return [Finding("error", "dkim", f"signature does not cover {', '.join(missing)}")]
    return [Finding("ok", "dkim", f"signature by {key.domain} (s={key.selector}) verifies")]


def _dns(config: Config, key: dkim_mod.DkimKey | None, lookup: TxtLookup | None) -> list[Finding]:
    domain = config.sender.address.rpartition("@")[2].lower()
    if lookup is None:
        return [
            Finding("skipped", "dns", "SPF, DMARC and DKIM records not checked (DNS checks off)")
        ]
    out: list[Finding] = []
    try:
        spf = [t for t in lookup(domain) if t.lower().startswith("v=spf1")]
        dmarc = [t for t in lookup(f"_dmarc.{domain}") if t.lower().startswith("v=dmarc1")]
        published = lookup(key.record_name) if key is not None else None
    except DnsUnavailable as exc:
        return [
            Finding(
                "skipped",
                "dns",
                f"DNS unreachable ({exc}): SPF, DMARC and DKIM records not checked",
            )
        ]
    if len(spf) == 1:
        out.append(Finding("ok", "spf", f"{domain}: {spf[0]}"))
    else:
        why = "no SPF record" if not spf else f"{len(spf)} SPF records (receivers reject that)"
        out.append(Finding("warning", "spf", f"{domain}: {why}"))
    if dmarc:
        out.append(Finding("ok", "dmarc", f"_dmarc.{domain}: {dmarc[0]}"))
    else:
        out.append(
            Finding(
                "warning",
                "dmarc",
                f"_dmarc.{domain}: no DMARC record (Gmail and Yahoo require one for bulk senders)",
            )
        )
    if key is not None and published is not None:
        record = key.public_record().decode()
        want = record.split("p=", 1)[1]
        found = ["".join(p.split()).split("p=", 1)[-1] for p in published if "p=" in p]
        if not published:
            out.append(
                Finding(
                    "warning", "dkim-dns", f"{key.record_name}: no DKIM record; publish: {record}"
                )
            )
        elif want not in found:
            out.append(
                Finding(
                    "error",
                    "dkim-dns",
                    f"{key.record_name}: the published key is not the configured one",
                )
            )
        else:
            out.append(Finding("ok", "dkim-dns", f"{key.record_name}: matches the configured key"))
    return out
