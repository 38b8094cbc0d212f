"""Preflight: what an inbox would object to, found before sending; errors stop `digest send`."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import SECRET, Run
from editions import make_edition
from test_headers import _dkim_config, _key_pem

from digest.config import Config, load_config
from digest.dkim import DkimKey, load_key
from digest.preflight import DnsUnavailable, Report, dns_lookup, run_preflight
from digest.shipped import shipped
from digest.store import Store
from digest.subscribers import Subscriber

NOW_ARG = "2026-11-30T08:00:00Z"
SOON = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def built(store: Store) -> Store:
    store.editions.save(make_edition(2, ("politics", "tech", "climate")))
    store.subscribers.add(Subscriber(email="ana@example.com", topics=("tech",)), now=SOON)
    return store


def levels(report: Report, check: str) -> list[str]:
    return [f.level for f in report.findings if f.check == check]


def edited(project: Path, old: str, new: str) -> Config:
    """The project with its own copy of the shipped template, edited."""
    path = project / "templates" / "weekly.mjml"
    path.parent.mkdir(exist_ok=True)
    text = shipped("templates", "weekly.mjml").read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return load_config(project / "digest.yaml")


def test_the_sample_edition_passes_and_says_what_it_did_not_check(config: Config) -> None:
    report = run_preflight(config, make_edition(3, ("politics", "tech")), secret=SECRET)
    assert report.ok, [f.line() for f in report.errors]
    assert levels(report, "subject") == ["ok"] and levels(report, "size") == ["ok"]
    assert levels(report, "one-click") == ["ok"] and levels(report, "links") == ["ok"]
    assert levels(report, "dkim") == ["warning"]  # no key configured
    assert levels(report, "dns") == ["skipped"]


def test_bad_links_images_and_placeholders_are_found(project: Path) -> None:
    config = edited(
        project,
        "<mj-raw>{% for section in sections %}</mj-raw>",
        '<mj-section><mj-column><mj-text><a href="/archive">click here</a> '
        '<a href="https://bit.ly/3xYz">Our survey</a> <a href="https://exa mple.com/x">Odd</a> '
        '<a href="http://plain.example.com/">Plain</a> {{ "{{ first_name }}" }}'
        '</mj-text><mj-image src="https://img.example.com/a.png" /></mj-column></mj-section>'
        "<mj-raw>{% for section in sections %}</mj-raw>",
    )
    report = run_preflight(config, make_edition(1, ("tech",)), secret=SECRET)
    errors = [f.message for f in report.errors]
    warnings = [f.message for f in report.warnings]
    assert not report.ok
    assert any("relative or empty link '/archive'" in m for m in errors)
    assert any("malformed link 'https://exa mple.com/x'" in m for m in errors)
    assert any("unresolved in the html part" in m and "{{" in m for m in errors)
    assert any("shortened link 'https://bit.ly/3xYz'" in m for m in warnings)
    assert any("vague link text" in m and "click here" in m for m in warnings)
    assert any("link without https" in m for m in warnings)
    assert any("image without alt text" in m for m in warnings)


@pytest.mark.parametrize(("length", "level"), [(60, "ok"), (90, "warning"), (160, "error")])
def test_subject_length(project: Path, length: int, level: str) -> None:
    path = project / "digest.yaml"
    text = path.read_text(encoding="utf-8")
    old = 'subject: "{site}: {name}, {start:%b %-d}–{end:%b %-d}"'
    path.write_text(text.replace(old, f'subject: "{"S" * length}"'), encoding="utf-8")
    report = run_preflight(load_config(path), make_edition(1, ("tech",)), secret=SECRET)
    assert levels(report, "subject") == [level]


def test_every_topic_mix_is_checked_for_size(config: Config) -> None:
    edition = make_edition(2, ("politics", "tech"))
    report = run_preflight(
        config, edition, secret=SECRET, topic_mixes=[("politics",), ("politics", "tech")]
    )
    sizes = [f.message for f in report.findings if f.check == "size"]
    assert len(sizes) == 2 and "[politics]" in sizes[0] and "[politics+tech]" in sizes[1]


def test_a_configured_dkim_key_must_verify(project: Path) -> None:
    config = _dkim_config(project, _key_pem())
    report = run_preflight(config, make_edition(1, ("tech",)), secret=SECRET)
    assert levels(report, "dkim") == ["ok"]


# -- DNS ------------------------------------------------------------------------------------
def fake_dns(records: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    return lambda name: records.get(name, [])


def test_spf_dmarc_and_the_published_dkim_key_are_checked(project: Path) -> None:
    config = _dkim_config(project, _key_pem())
    key = load_key(config)
    assert key is not None
    good = {
        "digest.example.com": ["v=spf1 include:sendgrid.net -all"],
        "_dmarc.digest.example.com": ["v=DMARC1; p=quarantine"],
        key.record_name: [key.public_record().decode()],
    }
    report = run_preflight(config, make_edition(1, ("tech",)), secret=SECRET, dns=fake_dns(good))
    assert [levels(report, c) for c in ("spf", "dmarc", "dkim-dns")] == [["ok"]] * 3
    other = DkimKey(key.domain, key.selector, _key_pem())
    wrong = {key.record_name: [other.public_record().decode()]}
    report = run_preflight(config, make_edition(1, ("tech",)), secret=SECRET, dns=fake_dns(wrong))
    assert levels(report, "spf") == ["warning"] and levels(report, "dmarc") == ["warning"]
    assert levels(report, "dkim-dns") == ["error"] and not report.ok


@pytest.fixture
def silent_dns() -> Iterator[int]:
    """A UDP port on loopback that takes queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_unreachable_dns_is_skipped_and_said_so(config: Config, silent_dns: int) -> None:
    lookup = dns_lookup(["127.0.0.1"], port=silent_dns, timeout=0.3)
    with pytest.raises(DnsUnavailable):
        lookup("digest.example.com")
    report = run_preflight(config, make_edition(1, ("tech",)), secret=SECRET, dns=lookup)
    (dns,) = [f for f in report.findings if f.check == "dns"]
    assert dns.level == "skipped" and "DNS unreachable" in dns.message
    assert report.ok


# -- the commands ------------------------------------------------------------------------
def test_preflight_command_prints_findings_and_exits_0(run: Run, built: Store) -> None:
    result = run("--now", NOW_ARG, "preflight", "weekly", "--week", "2026-W48", "--no-dns")
    assert "ok       one-click" in result.output and "skipped  dns" in result.output


def test_preflight_command_exits_6_on_an_error(run: Run, project: Path, built: Store) -> None:
    edited(
        project,
        "{{ subject }}</mj-title>",
        '{{ subject }}</mj-title><mj-raw><a href="x">y</a></mj-raw>',
    )
    result = run("preflight", "weekly", "--week", "2026-W48", "--no-dns", "--json", expect=6)
    assert '"ok": false' in result.output


def test_send_stops_before_the_first_delivery_on_a_preflight_error(
    run: Run, project: Path, built: Store
) -> None:
    edited(
        project,
        "<mj-raw>{% for section in sections %}</mj-raw>",
        '<mj-section><mj-column><mj-text><a href="/relative">Odd</a></mj-text></mj-column>'
        "</mj-section><mj-raw>{% for section in sections %}</mj-raw>",
    )
    result = run("send", "weekly", "--week", "2026-W48", "--transport", "outbox", expect=6)
    assert "relative or empty link" in result.output and "nothing was sent" in result.output
    assert built.deliveries.counts("weekly/2026-W48")["sent"] == 0
    assert not (project / "outbox").exists()
    run("send", "weekly", "--week", "2026-W48", "--transport", "outbox", "--no-preflight")
    assert built.deliveries.counts("weekly/2026-W48")["sent"] == 1
