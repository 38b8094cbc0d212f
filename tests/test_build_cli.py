"""`digest build` and `digest edition`: the editor's week, from the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Run

from digest.articles import Article
from digest.store import Store

MONDAY = datetime(2026, 11, 23, tzinfo=UTC)  # 2026-W48 starts here in Europe/London
LONG = "Regional leaders sign a water-sharing accord after a decade of bitter negotiations"


def art(id: str, topic: str, title: str, at: datetime, **more: object) -> Article:
    return Article(
        id=id,
        url=f"https://news.example.com/{id}",
        title=title,
        published_at=at,
        topics=(topic,),
        sources=("Prism Wire",),
        **more,  # type: ignore[arg-type]
    )


@pytest.fixture
def week(store: Store) -> list[Article]:
    articles = [
        art("p-drills", "politics", "Naval drills resume", MONDAY + timedelta(days=3)),
        art("p-accord", "politics", LONG, MONDAY + timedelta(days=1), priority=2),
        art("p-budget", "politics", "Coalition budget talks", MONDAY + timedelta(days=2)),
        art("t-chips", "tech", "Chip plant opens", MONDAY + timedelta(days=6, hours=23)),
    ]
    store.articles.upsert(articles, now=MONDAY)
    return articles


def test_build_prints_a_table_then_the_notes(run: Run, week: list[Article]) -> None:
    out = run("build", "weekly", "--week", "2026-W48").stdout.splitlines()
    assert out[0] == "weekly/2026-W48 (draft): 4 articles"
    assert out[1].split() == ["#", "topic", "id", "title", "published", "reason"]
    rows = [line.split("  ") for line in out[2:6]]
    cells = [[c.strip() for c in row if c.strip()] for row in rows]
    assert cells[0] == [
        "1",
        "politics",
        "p-accord",
        "Regional leaders sign a water-sharing accord af…",
        "2026-11-24",
        "editor priority 2",
    ]
    assert cells[1][3:] == ["Naval drills resume", "2026-11-26", "most recent in Politics"]
    assert cells[3][:2] == ["4", "tech"] and cells[3][4] == "2026-11-29"
    assert out[6:] == []  # nothing merged, skipped or cut this week


def test_dates_in_the_table_are_local_to_the_digest(project: Path, run: Run, store: Store) -> None:
    yaml = project / "digest.yaml"
    yaml.write_text(yaml.read_text().replace("timezone: Europe/London", "timezone: Asia/Seoul"))
    late = datetime(2026, 11, 25, 20, tzinfo=UTC)  # Thursday 05:00 in Seoul
    store.articles.upsert([art("k", "politics", "Seoul story", late)], now=MONDAY)
    out = run("build", "weekly", "--week", "2026-W48").stdout
    assert "2026-11-26" in out and "2026-11-25" not in out


def test_build_json_is_the_edition_and_nothing_else(run: Run, week: list[Article]) -> None:
    data = json.loads(run("build", "weekly", "--week", "2026-W48", "--json").stdout)
    assert data["key"] == "weekly/2026-W48" and data["status"] == "draft"
    assert data["start"] == "2026-11-23T00:00:00+00:00"
    assert [i["article"]["id"] for i in data["items"]] == [
        "p-accord",
        "p-drills",
        "p-budget",
        "t-chips",
    ]
    assert [i["rank"] for i in data["items"]] == [1, 2, 3, 4]
    assert all(i["thoughts"] for i in data["items"])


def test_build_defaults_to_the_current_local_week(run: Run, week: list[Article]) -> None:
    data = json.loads(run("--now", "2026-11-29T23:30:00Z", "build", "weekly", "--json").stdout)
    assert data["period"] == "2026-W48"


def test_rebuilding_needs_force(run: Run, week: list[Article], store: Store) -> None:
    run("build", "weekly", "--week", "2026-W48")
    store.articles.upsert(
        [art("p-late", "politics", "Late news", MONDAY + timedelta(days=6))], now=MONDAY
    )
    refused = run("build", "weekly", "--week", "2026-W48", expect=2)
    assert "error: edition weekly/2026-W48 already exists (draft, 4 articles)" in refused.stderr
    assert "--force" in refused.stderr
    out = run("build", "weekly", "--week", "2026-W48", "--force").stdout
    assert "Late news" in out
    assert "quota: cut 1 article from Politics (per_topic 3)" in out


@pytest.mark.parametrize(
    ("week", "message"),
    [
        ("2026-48", "error: week '2026-48': expected an ISO week like 2026-W05"),
        ("2027-W53", "error: week '2027-W53': 2027 has weeks 01 to 52"),
    ],
)
def test_a_bad_week_is_a_usage_error(run: Run, week: str, message: str) -> None:
    assert message in run("build", "weekly", "--week", week, expect=2).stderr


def test_an_unknown_digest_names_the_known_ones(run: Run) -> None:
    err = run("build", "monthly", "--week", "2026-W48", expect=2).stderr
    assert "no digest 'monthly' (known: weekly)" in err


def _ids(run: Run) -> list[str]:
    data = json.loads(run("edition", "show", "weekly", "--week", "2026-W48", "--json").stdout)
    return [i["article"]["id"] for i in data["items"]]


def test_editor_pins_drops_moves_and_approves(run: Run, week: list[Article]) -> None:
    run("build", "weekly", "--week", "2026-W48")
    assert _ids(run) == ["p-accord", "p-drills", "p-budget", "t-chips"]
    out = run("edition", "pin", "weekly", "--week", "2026-W48", "p-budget").stdout
    assert "pinned by editor" in out and "- editor pinned 'Coalition budget talks'" in out
    assert _ids(run) == ["p-budget", "p-accord", "p-drills", "t-chips"]
    run("edition", "move", "weekly", "--week", "2026-W48", "p-drills", "--to", "2")
    assert _ids(run) == ["p-budget", "p-drills", "p-accord", "t-chips"]
    run("edition", "drop", "weekly", "--week", "2026-W48", "p-accord")
    assert _ids(run) == ["p-budget", "p-drills", "t-chips"]
    out = run("edition", "approve", "weekly", "--week", "2026-W48").stdout
    assert out.startswith("weekly/2026-W48 (approved): 3 articles")
    refused = run("edition", "drop", "weekly", "--week", "2026-W48", "t-chips", expect=2)
    assert (
        "error: edition weekly/2026-W48 is approved; it can no longer be changed" in refused.stderr
    )
    assert "hint: to start over before sending: digest build weekly --week 2026-W48 --force" in (
        refused.stderr
    )
    assert _ids(run) == ["p-budget", "p-drills", "t-chips"]


def test_editing_errors_name_what_is_wrong(run: Run, week: list[Article]) -> None:
    missing = run("edition", "show", "weekly", "--week", "2026-W47", expect=2).stderr
    assert "error: no edition weekly/2026-W47" in missing
    assert "hint: digest build weekly --week 2026-W47" in missing
    run("build", "weekly", "--week", "2026-W48")
    unknown = run("edition", "pin", "weekly", "--week", "2026-W48", "nope", expect=2).stderr
    assert "error: edition weekly/2026-W48 has no article 'nope'" in unknown
    far = run("edition", "move", "weekly", "--week", "2026-W48", "t-chips", "--to", "3", expect=2)
    assert "error: position 3: section 'tech' has 1 article" in far.stderr


def test_every_command_reads_the_week_the_same_way(
    run: Run, store: Store, week: list[Article], project: Path
) -> None:
    from digest.subscriber import Subscriber

    store.subscribers.add(Subscriber(email="ana@example.com", topics=("politics",)), now=MONDAY)
    run("build", "weekly", "--week", "2026-w48")
    assert run("edition", "show", "weekly", "--week", " 2026-w48").stdout.startswith(
        "weekly/2026-W48 (draft)"
    )
    preview = run("preview", "weekly", "--week", "2026-w48", "--subscriber", "ana@example.com")
    assert f"html: {project / 'preview' / 'weekly' / '2026-W48' / 'ana@example.com.html'}" in (
        preview.output
    )
    assert "sent 1," in run("send", "weekly", "--week", "2026-w48").output
    bad = run("send", "weekly", "--week", "2026-48", expect=2)
    assert "expected an ISO week like 2026-W05" in bad.output
