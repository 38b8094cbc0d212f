"""One-click unsubscribe headers and DKIM, checked as raw bytes: in the outbox and on the wire.

Python's email parser decodes RFC 2047 encoded-words, so a parsed header looks right even
when mail clients cannot use it; these tests read the bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import Run
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fake_smtp import FakeSmtp
from fake_smtp import smtp_server as smtp_server_fixture  # noqa: F401
from test_smtp import NOW, _email, _transport

from digest.config import Config, load_config
from digest.dkim import REQUIRED_HEADERS, DkimKey, load_key, sign, signed_headers, verify
from digest.errors import ConfigError
from digest.mime import fold_raw
from digest.transports import make_transport

UNSUBSCRIBE_LINE = re.compile(
    rb"\r\nList-Unsubscribe: <https://digest\.example\.com/u/[\w.-]+>\r\n"
)
POST_LINE = b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"


def assert_raw_one_click(raw: bytes) -> None:
    head = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert UNSUBSCRIBE_LINE.search(head), head.decode(errors="replace")
    assert POST_LINE in head
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"list-unsubscribe"):
            assert b"=?" not in line


def test_every_demo_email_in_the_outbox_carries_raw_one_click_headers(
    run: Run, project: Path
) -> None:
    run("ingest")
    run("subscribers", "import", "subscribers/", "--skip-invalid")
    run("build", "weekly", "--week", "2026-W48")
    run("send", "weekly", "--week", "2026-W48", "--transport", "outbox")
    emls = sorted((project / "outbox" / "weekly" / "2026-W48").glob("*.eml"))
    assert len(emls) >= 20
    for eml in emls:
        assert_raw_one_click(eml.read_bytes())


def test_smtp_wire_carries_raw_one_click_headers(smtp_server: FakeSmtp) -> None:
    transport = _transport(smtp_server)
    long_link_email = _email(3)
    transport.send(long_link_email)
    transport.close()
    assert len(smtp_server.messages) == 3
    for got in smtp_server.messages:
        assert_raw_one_click(got.raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def test_a_long_header_folds_at_whitespace_and_is_never_encoded() -> None:
    mailto = "<mailto:unsubscribe@digest.example.com?subject=unsubscribe-" + "x" * 40 + ">"
    https = "<https://digest.example.com/u/" + "t" * 120 + ">"
    folded = fold_raw("List-Unsubscribe", f"{mailto}, {https}")
    assert "=?" not in folded
    lines = folded.split("\r\n")
    assert lines[0].startswith("List-Unsubscribe: <mailto:") and lines[1] == f" {https}"
    with pytest.raises(ValueError, match="ASCII"):
        fold_raw("List-Unsubscribe", "<https://exämple.com/u/1>")


# -- DKIM ------------------------------------------------------------------------------
def _key_pem(pkcs8: bool = False) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    formats = serialization.PrivateFormat
    fmt = formats.PKCS8 if pkcs8 else formats.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@pytest.fixture(scope="module")
def pem() -> bytes:
    return _key_pem(pkcs8=True)


def _with_dkim(project: Path, settings: str) -> Config:
    path = project / "digest.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("  outbox_dir: outbox\n", f"  outbox_dir: outbox\n  dkim:\n{settings}"),
        encoding="utf-8",
    )
    return load_config(path)


def _dkim_config(project: Path, pem: bytes) -> Config:
    (project / "dkim.pem").write_bytes(pem)
    return _with_dkim(
        project,
        "    domain: digest.example.com\n    selector: s2026\n    key_file: dkim.pem\n",
    )


def _lookup(key: DkimKey):  # type: ignore[no-untyped-def]
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return key.public_record() if name.decode().rstrip(".") == key.record_name else None

    return lookup


def test_outbox_message_is_signed_over_the_rfc_8058_headers_and_verifies(
    project: Path, pem: bytes
) -> None:
    config = _dkim_config(project, pem)
    key = load_key(config)
    assert key is not None
    out = make_transport("outbox", config, edition_key="weekly/2026-W48", now=lambda: NOW)
    out.send(_email(2))
    out.close()
    emls = sorted((project / "outbox" / "weekly" / "2026-W48").glob("*.eml"))
    assert len(emls) == 2
    for eml in emls:
        raw = eml.read_bytes()
        assert raw.startswith(b"DKIM-Signature: ")
        assert verify(raw, _lookup(key))
        assert set(h.lower() for h in REQUIRED_HEADERS) <= set(signed_headers(raw))
        assert_raw_one_click(raw)
        # Anyone who changes the unsubscribe link breaks the signature.
        forged = re.sub(rb"/u/token-(\d)", rb"/u/forged-\1", raw, count=1)
        assert forged != raw and not verify(forged, _lookup(key))


def test_smtp_message_is_signed_on_the_wire_and_verifies(
    project: Path, pem: bytes, smtp_server: FakeSmtp
) -> None:
    key = load_key(_dkim_config(project, pem))
    assert key is not None
    transport = _transport(smtp_server, dkim=key)
    transport.send(_email(2))
    transport.close()
    for got in smtp_server.messages:
        raw = got.raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert raw.startswith(b"DKIM-Signature: ") and verify(raw, _lookup(key))
        assert "list-unsubscribe-post" in signed_headers(raw)


def test_a_message_signed_with_another_key_does_not_verify(pem: bytes) -> None:
    ours = DkimKey("digest.example.com", "s1", _key_pem())
    other = DkimKey("digest.example.com", "s1", _key_pem())
    message = b"From: a@digest.example.com\r\nTo: b@example.com\r\nSubject: x\r\n\r\nbody\r\n"
    assert verify(sign(message, ours), _lookup(ours))
    assert not verify(sign(message, other), _lookup(ours))


def test_key_from_the_environment_and_clear_errors(
    project: Path, pem: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = "    domain: digest.example.com\n    selector: s2026\n"
    config = _with_dkim(project, settings)
    monkeypatch.delenv("DKIM_PRIVATE_KEY", raising=False)
    with pytest.raises(ConfigError, match="DKIM_PRIVATE_KEY: not set"):
        load_key(config)
    monkeypatch.setenv("DKIM_PRIVATE_KEY", "not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        make_transport("outbox", config, edition_key="weekly/2026-W48", now=lambda: NOW)
    monkeypatch.setenv("DKIM_PRIVATE_KEY", pem.decode())
    key = load_key(config)
    assert key is not None and key.selector == "s2026" and "PRIVATE" not in repr(key)
