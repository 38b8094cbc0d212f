"""DKIM signing (dkimpy) for the messages digest writes itself: SMTP and the outbox.

RFC 8058 asks that the signature cover both List-Unsubscribe and List-Unsubscribe-Post,
which common signers leave out by default; SIGNED_HEADERS names them. The private key
comes from a file named in digest.yaml or from the environment, never from digest.yaml.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from digest.config import Config
from digest.errors import ConfigError

SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Reply-To",
    "List-Id",
    "MIME-Version",
    "Content-Type",
)
# Every header RFC 8058 and the preflight check insist on.
REQUIRED_HEADERS = SIGNED_HEADERS[:7]


@dataclass(frozen=True)
class DkimKey:
    """A signing domain, its selector and the PEM private key (kept out of repr)."""

    domain: str
    selector: str
    private_key: bytes = field(repr=False)

    def public_record(self) -> bytes:
        """The TXT record to publish at SELECTOR._domainkey.DOMAIN."""
        key = serialization.load_pem_private_key(self.private_key, password=None)
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


def load_key(config: Config) -> DkimKey | None:
    """The configured DKIM key, or None when delivery.dkim is not set; ConfigError if unusable."""
    settings = config.delivery.dkim
    if settings is None:
        return None
    where = str(config.path)
    if settings.key_file:
        path = config.resolve(settings.key_file)
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                where, f"cannot read {path}: {exc.strerror or exc}", key="delivery.dkim.key_file"
            ) from None
        source = "delivery.dkim.key_file"
    else:
        pem = os.environ.get(settings.key_env, "").encode()
        if not pem.strip():
            raise ConfigError(
                settings.key_env,
                "not set, but delivery.dkim is",
                hint=f"export {settings.key_env} (the PEM key) or set delivery.dkim.key_file",
            )
        source = settings.key_env
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(where, f"{source}: not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 1024:
        raise ConfigError(where, f"{source}: need an RSA key of at least 1024 bits")
    # dkimpy reads PKCS#1 ("BEGIN RSA PRIVATE KEY"); accept PKCS#8 files too.
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return DkimKey(settings.domain, settings.selector, pkcs1)


def sign(message: bytes, key: DkimKey) -> bytes:
    """`message` with a DKIM-Signature header (relaxed/relaxed, rsa-sha256) in front."""
    signature = dkim.sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        key.private_key,
        include_headers=[h.encode() for h in SIGNED_HEADERS],
        canonicalize=(b"relaxed", b"relaxed"),
    )
    return signature + message


Lookup = Callable[..., bytes | None]


def verify(message: bytes, lookup: Lookup) -> bool:
    """True when the message's DKIM signature verifies with the key `lookup(name)` returns."""
    try:
        return bool(dkim.verify(message, dnsfunc=lookup))
    except dkim.DKIMException:
        return False


def signed_headers(message: bytes) -> list[str]:
    """The header names listed in the message's DKIM-Signature h= tag, lower-cased."""
    head = message.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"dkim-signature:"):
            tags = dict(
                t.strip().split(b"=", 1) for t in line.split(b":", 1)[1].split(b";") if b"=" in t
            )
            names = b"".join(tags.get(b"h", b"").split())
            return [n.decode().lower() for n in names.split(b":") if n]
    return []
