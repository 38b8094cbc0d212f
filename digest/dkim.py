"""DKIM signing (dkimpy) for the messages digest writes itself: SMTP and the outbox.

RFC 8058 asks that the signature cover both List-Unsubscribe and List-Unsubscribe-Post,
which common signers leave out by default; SIGNED_HEADERS names them. The private key
comes from a file named in digest.yaml or from the environment, never from digest.yaml.
dkimpy (with the DNS library it loads, ≈ 0.3 s) is imported when something is first
signed or verified, so a run without DKIM does not wait for it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

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
    import dkim

    signature = dkim.sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        key.private_key,
        include_headers=[h.encode() for h in SIGNED_HEADERS],
        canonicalize=(b"relaxed", b"relaxed"),
    )
    return signature + message


_SIGNATURE = b"DKIM-Signature"
_SHARED_MIN = 2048  # body chunks at least this long are canonicalised once and kept
_KEPT_BYTES = 32 << 20  # at most this much canonical text kept


class Signer:
    """Signs exactly as `sign` does, byte for byte, for a fraction of its cost.

    dkimpy spends ≈ 24 ms on an 80 KB message: the key parsed anew, RSA in pure Python,
    and the relaxed canonicalisation of the whole body. Here the key is parsed once,
    RSA runs in OpenSSL (PKCS#1 v1.5 is deterministic: the same signature), and the body
    comes in chunks that each start a line, so the chunks many messages share (a
    content's encoded parts) are canonicalised once. tests/test_prepared.py compares the
    result with `sign` for each recipient.
    """

    def __init__(self, key: DkimKey) -> None:
        self.key = key
        private = serialization.load_pem_private_key(key.private_key, password=None)
        assert isinstance(private, rsa.RSAPrivateKey)  # load_key accepts nothing else
        self._rsa = private
        self._include = tuple(h.lower().encode() for h in SIGNED_HEADERS)
        self._canonical: dict[bytes, bytes] = {}
        self._kept = 0
        from dkim.canonicalization import CanonicalizationPolicy

        self._relaxed = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")

    def sign(self, head: bytes, body: Sequence[bytes], *, at: float | None = None) -> bytes:
        """The DKIM-Signature header line(s) for `head` (header lines, CRLF-ended, without
        the blank line) and `body` (its chunks, each ending in CRLF); `at` is t= (now)."""
        import dkim
        from dkim.canonicalization import correct_empty_body, strip_trailing_lines

        canonical = strip_trailing_lines(b"".join(self._canonicalise(c) for c in body))
        body_hash = base64.b64encode(hashlib.sha256(correct_empty_body(canonical)).digest())
        stamp = int(time.time() if at is None else at)
        fields = [
            (b"v", b"1"),
            (b"a", b"rsa-sha256"),
            (b"c", b"relaxed/relaxed"),
            (b"d", self.key.domain.encode()),
            (b"i", b"@" + self.key.domain.encode()),
            (b"q", b"dns/txt"),
            (b"s", self.key.selector.encode()),
            (b"t", str(stamp).encode("ascii")),
            (b"h", b" : ".join(self._include)),
            (b"bh", body_hash),
            (b"b", b"0" * 60),  # as dkimpy: makes b= fold onto a line of its own
        ]
        value = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(_SIGNATURE))
        value = dkim.RE_BTAG.sub(b"\\1", value)
        headers, _ = dkim.rfc822_parse(head + b"\r\n")
        digest = hashlib.sha256()
        dkim.hash_headers(
            digest,
            self._relaxed,
            self._relaxed.canonicalize_headers(headers),
            self._include,
            (_SIGNATURE, b" " + value),
            dict(fields),
        )
        signature = self._rsa.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        fields[-1] = (b"b", base64.b64encode(signature))
        value = b"; ".join(b"=".join(f) for f in fields) + b"\r\n"
        return _SIGNATURE + b": " + dkim.fold(value, namelen=len(_SIGNATURE))

    def _canonicalise(self, chunk: bytes) -> bytes:
        """Relaxed body canonicalisation without the end-of-body rule (line by line, so
        chunk by chunk); long chunks are kept, since they are the shared ones."""
        from dkim.canonicalization import compress_whitespace, strip_trailing_whitespace

        if len(chunk) < _SHARED_MIN:
            return compress_whitespace(strip_trailing_whitespace(chunk))
        found = self._canonical.get(chunk)
        if found is None:
            found = compress_whitespace(strip_trailing_whitespace(chunk))
            if self._kept + len(found) > _KEPT_BYTES:
                self._canonical.clear()
                self._kept = 0
            self._canonical[chunk] = found
            self._kept += len(found)
        return found


Lookup = Callable[..., bytes | None]


def verify(message: bytes, lookup: Lookup) -> bool:
    """True when the message's DKIM signature verifies with the key `lookup(name)` returns."""
    import dkim

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
