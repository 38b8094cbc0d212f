"""Subscriber lists: importing files (reported by line), managing subscribers, exporting."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import Run

from digest.config import Config
from digest.store import Store
from digest.subscriber import Subscriber
from digest.subscriber_import import ImportReport, RowOutcome, import_subscribers

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths on the command line are relative to the project, as when run from it."""
    monkeypatch.chdir(project)


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _import(
    config: Config, store: Store, paths: list[Path], **options: bool
) -> tuple[ImportReport, dict[str, list[RowOutcome]]]:
    """Import `paths`; the report, and the rows it told of, by kind."""
    rows: dict[str, list[RowOutcome]] = {}

    def told(outcomes: Sequence[RowOutcome]) -> None:
        for r in outcomes:
            rows.setdefault(r.kind, []).append(r)

    report = import_subscribers(config, store, paths, now=NOW, on_rows=told, **options)
    return report, rows


def _emails(store: Store, status: str | None = None) -> list[str]:
    return sorted(s.email for s in store.subscribers.iter_all(status=status))


# -- the sample lists ----------------------------------------------------------------------
def test_sample_lists_import_with_invalid_rows_skipped_and_listed(run: Run, store: Store) -> None:
    result = run("subscribers", "import", "subscribers/", "--skip-invalid")

    assert "imported: 28 added, 0 updated, 0 unchanged, 0 kept suppressed, 2 invalid (skipped)" in (
        result.stdout
    )
    assert (
        "invalid    subscribers/readers.yaml:76: invalid address 'priya.sharma.example.com': "
        "An email address must have an @-sign." in result.stderr
    )
    assert "invalid    subscribers/signups.csv:15: invalid address 'dana.white@example..org'" in (
        result.stderr
    )
    assert store.subscribers.count(status="active") == 26
    assert _emails(store, "unsubscribed") == ["carl.jensen@example.com", "oliver.grant@example.net"]
    active = list(store.subscribers.iter_all(status="active"))
    assert {t for s in active for t in s.topics} == {
        "politics", "tech", "economy", "climate", "culture", "health",
    }  # fmt: skip
    assert len({s.timezone for s in active}) >= 8
    assert any(len(s.topics) == 1 for s in active) and any(len(s.topics) == 6 for s in active)
    marco = store.subscribers.get_by_email("marco.silva@example.com")
    assert marco is not None and marco.consent_method == "import"
    assert marco.consent_source == "readers.yaml"


def test_sample_lists_without_skip_invalid_import_nothing(run: Run, store: Store) -> None:
    result = run("subscribers", "import", "subscribers/", expect=2)
    assert "error: 2 invalid row(s); nothing was imported (fix them, or pass --skip-invalid)" in (
        result.stderr
    )
    assert "subscribers/readers.yaml:76" in result.stderr
    assert store.subscribers.count() == 0


def test_importing_twice_leaves_everything_unchanged(run: Run, store: Store) -> None:
    run("subscribers", "import", "subscribers/", "--skip-invalid")
    again = run("subscribers", "import", "subscribers/", "--skip-invalid")
    assert "0 added, 0 updated, 28 unchanged" in again.stdout
    assert store.subscribers.count() == 28


# -- files and lines -----------------------------------------------------------------------
def test_yaml_and_csv_rows_are_reported_by_the_line_they_start_on(
    config: Config, store: Store, tmp_path: Path
) -> None:
    yml = _write(
        tmp_path,
        "list.yaml",
        "# readers\n- email: a@example.com\n  topics: [tech]\n\n- email: b@example.com\n"
        "  topics: tech; climate\n  timezone: Asia/Tokyo\n",
    )
    csv = _write(
        tmp_path,
        "list.csv",
        'email,name,topics\nc@example.com,"Line\nbreak",health\nd@example.org,D,health|culture\n',
    )
    _, rows = _import(config, store, [yml, csv])

    assert [(r.file, r.line, r.email) for r in rows["added"]] == [
        (str(yml), 2, "a@example.com"),
        (str(yml), 5, "b@example.com"),
        (str(csv), 2, "c@example.com"),
        (str(csv), 4, "d@example.org"),
    ]
    b = store.subscribers.get_by_email("b@example.com")
    assert b is not None and b.topics == ("tech", "climate") and b.timezone == "Asia/Tokyo"
    a = store.subscribers.get_by_email("a@example.com")
    assert a is not None and a.timezone == "Europe/London"  # the site's time zone
    d = store.subscribers.get_by_email("d@example.org")
    assert d is not None and d.topics == ("health", "culture") and d.consent_at == NOW


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad.yaml",
            "- email: not-an-address\n  topics: [tech]\n",
            "bad.yaml:1: invalid address 'not-an-address': An email address must have an @-sign.",
        ),
        (
            "topic.yaml",
            "subscribers:\n  - email: a@example.com\n    topics: [tech, sports]\n",
            "topic.yaml:2: unknown topic 'sports' "
            "(valid: politics, tech, economy, climate, culture, health)",
        ),
        (
            "tz.csv",
            "email,topics,timezone\na@example.com,tech,Mars/Olympus\n",
            "tz.csv:2: unknown time zone 'Mars/Olympus' (use an IANA name such as Europe/Paris)",
        ),
        (
            "empty.csv",
            "email,topics\na@example.com,\n",
            "empty.csv:2: at least one topic is required "
            "(valid: politics, tech, economy, climate, culture, health)",
        ),
        (
            "status.yaml",
            "- email: a@example.com\n  topics: [tech]\n  status: paused\n",
            "status.yaml:1: unknown status 'paused' "
            "(valid: pending, active, unsubscribed, bounced, complained)",
        ),
        (
            "field.yaml",
            "- email: a@example.com\n  topics: [tech]\n  phone: '123'\n",
            "field.yaml:1: unknown field 'phone'",
        ),
        (
            "broken.yaml",
            "- email: a@example.com\n  topics: [tech\n- email: b@example.com\n",
            "broken.yaml:3: invalid YAML: did not find expected ',' or ']'",
        ),
        (
            "shape.yaml",
            "people:\n  - email: a@example.com\n",
            "shape.yaml:1: unknown top-level key 'people'",
        ),
        (
            "column.csv",
            "email,topics,phone\na@example.com,tech,1\n",
            "column.csv:1: unknown column 'phone' (valid: email, name, topics,",
        ),
        (
            "cells.csv",
            "email,topics\na@example.com,tech,extra\n",
            "cells.csv:2: 3 cells, the header has 2",
        ),
        (
            "twice.yaml",
            "- email: Ana@Example.com\n  topics: [tech]\n"
            "- email: ana@example.COM\n  topics: [health]\n",
            "twice.yaml:3: ana@example.com appears twice: ",
        ),
    ],
)
def test_an_invalid_row_is_reported_by_file_and_line_and_nothing_changes(
    run: Run, store: Store, project: Path, name: str, text: str, message: str
) -> None:
    keep = store.subscribers.add(
        Subscriber(email="kept@example.com", name="Old", topics=("tech",)), now=NOW
    )
    _write(project, "good.yaml", "- email: kept@example.com\n  name: New\n  topics: [tech]\n")
    _write(project, name, text)

    result = run("subscribers", "import", "good.yaml", name, expect=2)

    assert f"invalid    {message}" in result.stderr
    assert store.subscribers.get_by_email("kept@example.com") == keep  # name not updated
    assert store.subscribers.count() == 1


def test_a_duplicate_names_both_lines(config: Config, store: Store, tmp_path: Path) -> None:
    first = _write(tmp_path, "a.yaml", "- email: ana@example.com\n  topics: [tech]\n")
    second = _write(
        tmp_path, "b.csv", "email,topics\nbob@example.com,tech\nANA@example.com,health\n"
    )
    report, rows = _import(config, store, [first, second])
    assert [str(r) for r in rows["invalid"]] == [
        f"{second}:3: ana@example.com appears twice: {first}:1 and {second}:3"
    ]
    assert not report.applied and store.subscribers.count() == 0


def test_skip_invalid_imports_the_valid_rows_and_lists_the_rest(
    run: Run, store: Store, project: Path
) -> None:
    _write(
        project,
        "mixed.csv",
        "email,name,topics\nok@example.com,Ok,tech\nbad@,Bad,tech\nfine@example.net,Fine,culture\n",
    )
    result = run("subscribers", "import", "mixed.csv", "--skip-invalid")
    assert "invalid    mixed.csv:3: invalid address 'bad@'" in result.stderr
    assert (
        "2 added, 0 updated, 0 unchanged, 0 kept suppressed, 1 invalid (skipped)" in result.stdout
    )
    assert _emails(store) == ["fine@example.net", "ok@example.com"]


def test_dry_run_reports_and_changes_nothing(run: Run, store: Store) -> None:
    result = run("subscribers", "import", "subscribers/", "--skip-invalid", "--dry-run")
    assert "would import (nothing changed): 28 added" in result.stdout
    assert store.subscribers.count() == 0


def test_a_missing_path_is_an_error(run: Run) -> None:
    result = run("subscribers", "import", "nowhere.csv", expect=2)
    assert "error: nowhere.csv: no such file or directory" in result.stderr


# -- updates -------------------------------------------------------------------------------
def test_addresses_are_unique_whatever_their_case(
    config: Config, store: Store, tmp_path: Path
) -> None:
    first = _write(tmp_path, "one.yaml", "- email: Ana.Lima@EXAMPLE.com\n  topics: [tech]\n")
    second = _write(tmp_path, "two.yaml", "- email: ana.lima@example.com\n  topics: [health]\n")
    import_subscribers(config, store, [first], now=NOW)
    _, rows = _import(config, store, [second])

    assert [r.email for r in rows["updated"]] == ["ana.lima@example.com"]
    assert _emails(store) == ["ana.lima@example.com"]
    ana = store.subscribers.get_by_email("ANA.LIMA@example.com")
    assert ana is not None and ana.topics == ("health",)


def test_an_import_never_resubscribes_an_unsubscribed_reader(
    run: Run, store: Store, project: Path
) -> None:
    gone = store.subscribers.add(
        Subscriber(email="gone@example.com", topics=("tech",), status="unsubscribed"), now=NOW
    )
    bounced = store.subscribers.add(
        Subscriber(email="bounce@example.com", topics=("tech",), status="bounced"), now=NOW
    )
    _write(
        project,
        "back.yaml",
        "- email: gone@example.com\n  name: Gone Again\n  topics: [climate]\n  status: active\n"
        "- email: bounce@example.com\n  topics: [tech]\n",
    )
    result = run("subscribers", "import", "back.yaml")

    assert "kept       back.yaml:1  gone@example.com  (kept unsubscribed)" in result.stdout
    assert "kept       back.yaml:5  bounce@example.com  (kept bounced)" in result.stdout
    after = store.subscribers.get(gone.id or 0)
    assert after is not None and after.status == "unsubscribed"
    assert (after.name, after.topics) == ("Gone Again", ("climate",))
    assert store.subscribers.get(bounced.id or 0) == bounced


def test_an_import_can_record_an_unsubscribe(config: Config, store: Store, tmp_path: Path) -> None:
    store.subscribers.add(Subscriber(email="a@example.com", topics=("tech",)), now=NOW)
    path = _write(
        tmp_path, "opt-outs.csv", "email,topics,status\na@example.com,tech,unsubscribed\n"
    )
    _, rows = _import(config, store, [path])
    assert [r.email for r in rows["updated"]] == ["a@example.com"]
    assert _emails(store, "unsubscribed") == ["a@example.com"]


# -- export --------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "yaml"])
def test_export_imports_back_unchanged(run: Run, store: Store, project: Path, fmt: str) -> None:
    run("subscribers", "import", "subscribers/", "--skip-invalid")
    store.subscribers.add(
        Subscriber(
            email="quote@example.com",
            name='Jo "JJ" O\'Neil, Jr.',
            topics=("tech",),
            consent_at=NOW,
            consent_method="double-opt-in",
            consent_source="https://digest.example.com/subscribe",
            consent_ip="192.0.2.7",
        ),
        now=NOW,
    )
    before = list(store.subscribers.iter_all())
    out = project / f"backup.{fmt}"
    run("subscribers", "export", "--format", fmt, "-o", str(out))

    again = run("subscribers", "import", str(out))
    assert "0 added, 0 updated, 29 unchanged" in again.stdout

    for s in before:
        assert s.id is not None and store.subscribers.delete(s.id)
    run("subscribers", "import", str(out))
    after = list(store.subscribers.iter_all())
    strip = [(s.__dict__ | {"id": None}) for s in before]
    assert [(s.__dict__ | {"id": None}) for s in after] == strip


def test_export_to_stdout_filters_by_status(run: Run) -> None:
    run("subscribers", "import", "subscribers/", "--skip-invalid")
    result = run("subscribers", "export", "--format", "yaml", "--status", "unsubscribed")
    rows = yaml.safe_load(result.stdout)
    assert [r["email"] for r in rows] == ["oliver.grant@example.net", "carl.jensen@example.com"]
    assert rows[0]["topics"] == ["tech", "politics"]


# -- list, add, show, remove ---------------------------------------------------------------
def test_list_filters_by_status_and_topic(run: Run) -> None:
    run("subscribers", "import", "subscribers/", "--skip-invalid")
    climate = run("subscribers", "list", "--status", "active", "--topic", "climate", "--json")
    rows = json.loads(climate.stdout)
    assert rows and all("climate" in r["topics"] and r["status"] == "active" for r in rows)
    assert "nadia.haddad@example.org" in {r["email"] for r in rows}
    assert "kai.wong@example.org" in {r["email"] for r in rows}
    assert "emi.tanaka@example.org" not in {r["email"] for r in rows}

    plain = run("subscribers", "list", "--status", "unsubscribed")
    assert plain.stdout.splitlines() == [
        "oliver.grant@example.net\tunsubscribed\ttech,politics\tEurope/London\tOliver Grant",
        "carl.jensen@example.com\tunsubscribed\teconomy\tEurope/Copenhagen\tCarl Jensen",
    ]
    bad = run("subscribers", "list", "--topic", "sports", expect=2)
    assert "unknown topic 'sports'" in bad.stderr


def test_add_show_and_remove_one_subscriber(run: Run, store: Store) -> None:
    added = run(
        "--now", "2026-11-20T12:00:00Z", "subscribers", "add", "Zed@Example.org",
        "--name", "Zed", "--topic", "tech", "--topic", "health", "--timezone", "Asia/Tokyo",
    )  # fmt: skip
    assert added.stdout == "added zed@example.org (active; tech, health)\n"

    shown = run("subscribers", "show", "ZED@example.org").stdout
    for line in (
        "email:          zed@example.org",
        "name:           Zed",
        "topics:         tech, health",
        "timezone:       Asia/Tokyo",
        "consent at:     2026-11-20T12:00:00+00:00",
        "consent method: cli",
        "consent source: command line",
        "deliveries:     none",
    ):
        assert line in shown

    again = run("subscribers", "add", "zed@example.org", "--topic", "tech", expect=2)
    assert "error: zed@example.org is already a subscriber" in again.stderr

    assert run("subscribers", "remove", "zed@example.org").stdout == "removed zed@example.org\n"
    assert store.subscribers.count() == 0
    missing = run("subscribers", "show", "zed@example.org", expect=2)
    assert "error: no subscriber 'zed@example.org'" in missing.stderr
    gone = run("subscribers", "remove", "zed@example.org", expect=2)
    assert "error: no subscriber 'zed@example.org'" in gone.stderr


def test_add_rejects_a_bad_address_topic_or_time_zone(run: Run, store: Store) -> None:
    bad = run("subscribers", "add", "two@@example.com", "--topic", "tech", expect=2)
    assert "error: two@@example.com: invalid address 'two@@example.com'" in bad.stderr
    topic = run("subscribers", "add", "a@example.com", "--topic", "sport", expect=2)
    assert "error: a@example.com: unknown topic 'sport' (valid: politics, tech," in topic.stderr
    tz = run(
        "subscribers", "add", "a@example.com", "--topic", "tech", "--timezone", "Nowhere", expect=2
    )  # fmt: skip
    assert "unknown time zone 'Nowhere'" in tz.stderr
    assert store.subscribers.count() == 0


def test_remove_help_says_the_record_is_deleted(run: Run) -> None:
    assert "Delete the subscriber's record" in run("subscribers", "remove", "--help").stdout


# -- large lists: streamed, checked whole, written in chunks ---------------------------------
def _list(folder: Path, name: str, n: int, *, tail: str = "") -> Path:
    rows = "".join(f"reader{i}@example.org,Reader {i},tech;health\n" for i in range(n))
    return _write(folder, name, "email,name,topics\n" + rows + tail)


def _writes(store: Store) -> list[int]:
    """Rows of each INSERT into subscribers from now on (executemany: one per transaction)."""
    from sqlalchemy import event

    sizes: list[int] = []

    def seen(_conn: object, _cursor: object, sql: str, params: object, _ctx: object, many: bool):
        if sql.startswith("INSERT INTO subscribers"):
            sizes.append(len(params) if many else 1)  # type: ignore[arg-type]

    event.listen(store.engine, "before_cursor_execute", seen)
    return sizes


def test_a_long_list_is_written_a_chunk_per_transaction_as_it_goes(
    config: Config, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from digest import subscriber_import

    monkeypatch.setattr(subscriber_import, "CHUNK", 50)
    path = _list(tmp_path, "long.csv", 120)
    sizes = _writes(store)
    stored_when_told: list[int] = []

    def told(rows: Sequence[RowOutcome]) -> None:
        stored_when_told.append(store.subscribers.count())
        firsts.append(rows[0].line)

    firsts: list[int] = []
    report = import_subscribers(config, store, [path], now=NOW, on_rows=told)

    assert sizes == [50, 50, 20]  # one INSERT, one transaction, per chunk
    assert stored_when_told == [50, 100, 120]  # each chunk is told of once it is written
    assert firsts == [2, 52, 102]
    assert (report.added, report.invalid, report.applied) == (120, 0, True)
    r119 = store.subscribers.get_by_email("reader119@example.org")
    assert r119 is not None and r119.topics == ("tech", "health") and r119.consent_at == NOW
    assert r119.consent_source == "long.csv" and r119.timezone == "Europe/London"


def test_a_bad_row_after_many_good_chunks_writes_nothing(
    run: Run, store: Store, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from digest import subscriber_import

    monkeypatch.setattr(subscriber_import, "CHUNK", 50)
    _list(project, "long.csv", 160, tail="late@example,Late,tech\n")
    sizes = _writes(store)

    result = run("subscribers", "import", "long.csv", expect=2)

    assert "invalid    long.csv:162: invalid address 'late@example'" in result.stderr
    assert "would import (nothing changed): 160 added" in result.stdout
    assert sizes == [] and store.subscribers.count() == 0


def test_a_file_that_breaks_part_way_imports_none_of_its_rows(
    run: Run, store: Store, project: Path
) -> None:
    good = "".join(f"r{i}@example.org,tech\n" for i in range(30))
    (project / "broken.csv").write_bytes(
        ("email,topics\n" + good).encode() + b"caf\xe9@example.org,tech\n" + b"z@example.org,tech\n"
    )
    _write(project, "other.csv", "email,topics\nother@example.org,health\n")

    refused = run("subscribers", "import", "broken.csv", "other.csv", expect=2)
    assert "invalid    broken.csv:32: not UTF-8 text (invalid continuation byte at byte " in (
        refused.stderr
    )
    assert store.subscribers.count() == 0

    skipped = run("subscribers", "import", "broken.csv", "other.csv", "--skip-invalid")
    assert "1 added, 0 updated, 0 unchanged, 0 kept suppressed, 1 invalid (skipped)" in (
        skipped.stdout
    )
    assert _emails(store) == ["other@example.org"]


def test_a_duplicate_far_apart_names_both_lines(
    config: Config, store: Store, tmp_path: Path
) -> None:
    path = _list(tmp_path, "long.csv", 5000, tail="READER7@example.org,Again,tech\n")
    report, rows = _import(config, store, [path], skip_invalid=True)
    assert [str(r) for r in rows["invalid"]] == [
        f"{path}:5002: reader7@example.org appears twice: {path}:9 and {path}:5002"
    ]
    assert report.added == 5000 and store.subscribers.count() == 5000
    first = store.subscribers.get_by_email("reader7@example.org")
    assert first is not None and first.name == "Reader 7"


def test_memory_does_not_grow_with_the_list(
    config: Config, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row costs 8 bytes (its address hash) while importing, besides one chunk of rows;
    the whole-file import held about 4.5 KB a row."""
    import tracemalloc

    from digest import subscriber_import

    monkeypatch.setattr(subscriber_import, "CHUNK", 200)

    def peak(name: str, n: int) -> int:
        rows = "".join(f"{name}{i}@example.org,Reader {i},tech\n" for i in range(n))
        path = _write(tmp_path, f"{name}.csv", "email,name,topics\n" + rows)
        tracemalloc.start()
        try:
            import_subscribers(config, store, [path], now=NOW, on_rows=lambda _rows: None)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak("warm", 400)  # caches and lazy imports fill up here
    small, large = peak("small", 2000), peak("large", 10_000)
    assert large - small < 400_000  # 8,000 more rows: < 50 bytes each


@pytest.mark.parametrize(
    "address",
    [
        "Ana.Lima@Example.COM", "o'brien+news@example.org", "a@b.co", "x@[192.0.2.1]",
        "user@localhost", "user@example", "a..b@example.com", ".a@example.com",
        "a.@example.com", "a@example..com", "a@-example.com", "a@example.com.",
        "a b@example.com", '"quoted"@example.com', "Ana <ana@example.com>", "a@b@example.com",
        "ünï@example.com", "a@bücher.example", "a@xn--bcher-kva.example", "a@test",
        "a@example.123", "x" * 64 + "@example.com", "x" * 65 + "@example.com",
        "x" * 240 + "@example.com", "a@" + "b" * 64 + ".com", "a@example.invalid",
        "postmaster@EXAMPLE.com", "a@sub_domain.example.com", "@example.com", "a@",
    ],
)  # fmt: skip
def test_the_quick_address_check_agrees_with_email_validator(address: str) -> None:
    from email_validator import EmailNotValidError, validate_email

    from digest.subscribers import normalize_email

    try:
        expected = validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        with pytest.raises(ValueError, match=re.escape(str(exc))):
            normalize_email(address)
        return
    assert normalize_email(address) == expected


def _address_corpus() -> list[str]:
    """Local parts and domains that sit on either side of a rule, crossed, plus lengths at
    the limits: what a quick check could get wrong."""
    locals_ = [
        "a",
        "Ana.Lima",
        "o'brien+news",
        "user_name",
        "a-b",
        "#!$%&'*+-/=?^_`{|}~",
        "a..b",
        ".a",
        "a.",
        "x" * 64,
        "x" * 65,
        "ünï",
        '"q"',
        "a b",
        "",
        "a(b)",
    ]
    domains = [
        "example.com", "EXAMPLE.COM", "Example.Co.Uk", "b.co", "a.b-c.de", "123.com",
        "localhost", "example", "test", "example..com", "-example.com", "example-.com",
        "ex-ample.com", "ex--ample.com", "ab--cd.com", "xn--bcher-kva.example",
        "xn--abc.com", "XN--BCHER-KVA.example", "bücher.example", "münchen.de",
        "sub_domain.example.com", "example.123", "example.c1", "example.1c", "example.c",
        "example.co-m", "example.-com", "example.com-", "1.2.3.4", "[192.0.2.1]",
        "b" * 63 + ".com", "b" * 64 + ".com", "a." + "c" * 63, "a." + "c" * 64,
        ".".join(["d" * 63] * 3) + "." + "e" * 61, ".".join(["d" * 63] * 3) + "." + "e" * 62,
        "example.invalid", "x.local", "x.onion", "x.arpa", "x.test", "x.localhost",
        "EXAMPLE.INVALID", "invalid.example.com", "x.example", "example.com.", ".example.com",
        "exa mple.com", "ex@mple.com", "ex%ample.com", "example.com:25", "ﬁ.com",
        "ＥＸＡＭＰＬＥ.com", "example.com\u200b", "xn--ls8h.la", "a.b.c.d.e.f.g.h.io",
    ]  # fmt: skip
    corpus = [f"{local}@{domain}" for local in locals_ for domain in domains]
    long_domain = ".".join(["d" * 60] * 3) + ".org"  # 187 octets
    corpus += ["x" * n + "@" + long_domain for n in (60, 65, 66, 67, 70)]  # total 254 at 66
    return corpus + ["@example.com", "a@", "a@@example.com", "a@b@example.com", "Ana <a@b.co>"]


def test_the_quick_address_check_agrees_with_email_validator_on_a_corpus() -> None:
    """Every address of the corpus gets email-validator's answer: the same address stored,
    or the same reason for refusing it."""
    from email_validator import EmailNotValidError, validate_email

    from digest.subscribers import normalize_email

    corpus = _address_corpus()
    disagree: list[str] = []
    accepted = 0
    for address in corpus:
        try:
            expected = validate_email(address, check_deliverability=False).normalized.lower()
        except EmailNotValidError as exc:
            expected = f"invalid address {address!r}: {exc}"
        else:
            accepted += 1
        try:
            got = normalize_email(address)
        except ValueError as exc:
            got = str(exc)
        if got != expected:
            disagree.append(f"{address!r}: {got!r} != {expected!r}")
    assert disagree == []
    assert len(corpus) > 900 and 150 < accepted < len(corpus) - 150  # both sides are tried
