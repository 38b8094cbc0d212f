"""Editors see each card's prompt, its origin, sources and summary, and rewrite a prompt, a
summary, a title or the email's intro until approval; every change is on record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import ROOT, Run
from sqlalchemy import insert

from digest.articles import Article
from digest.config import Config
from digest.editing import set_card, set_intro
from digest.errors import NotFoundError, UsageError
from digest.render import compile_template, render_email
from digest.store import Store
from digest.store.schema import deliveries

MONDAY = datetime(2026, 11, 23, tzinfo=UTC)
WEEK = ("--week", "2026-W48")


@pytest.fixture
def built(run: Run, store: Store) -> None:
    store.articles.upsert(
        [
            Article(
                id="truce",
                url="https://paper.example.com/truce",
                title="Truce talks resume in Geneva",
                summary="Negotiators met again on Monday.",
                body_html="<p>It remains to be seen whether the truce will hold.</p>",
                published_at=MONDAY + timedelta(days=2),
                topics=("politics",),
                sources=("Paper",),
            ),
            Article(
                id="chips",
                url="https://tech.example.com/chips",
                title="Chip plant opens",
                summary="A new plant opened.",
                published_at=MONDAY + timedelta(days=3),
                topics=("tech",),
                sources=("Wire",),
            ),
        ],
        now=MONDAY,
    )
    run("build", "weekly", *WEEK)


def test_show_lists_each_cards_prompt_origin_sources_and_summary(run: Run, built: None) -> None:
    out = run("edition", "show", "weekly", *WEEK).stdout
    assert "card 1: Truce talks resume in Geneva" in out
    assert "  sources: Paper" in out
    assert "    Negotiators met again on Monday." in out
    assert "  prompt (derived):\n    Do you think the truce will hold?" in out
    assert "  prompt (fallback):" in out


def test_editors_rewrite_prompt_summary_title_and_intro_with_history(
    run: Run, built: None, config: Config, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_EDITOR", "ana")
    at = ("--now", "2026-11-30T08:00:00Z")
    run(*at, "edition", "set", "weekly", *WEEK, "--card", "1", "--prompt", "Would you sign it?")
    run(
        *at,
        "edition",
        "set",
        "weekly",
        *WEEK,
        "--card",
        "2",
        "--summary",
        "Opened <b>today</b>.",
        "--title",
        "A chip plant opens",
        "--by",
        "ben",
    )
    run(*at, "edition", "set", "weekly", *WEEK, "--intro", "A <script>calm</script> week.")
    edition = store.editions.get("weekly/2026-W48")
    assert edition is not None
    assert edition.items[0].thoughts == "Would you sign it?"
    assert edition.items[0].prompt_origin == "editor"
    assert edition.items[1].article.title == "A chip plant opens"
    assert edition.intro == "A <script>calm</script> week."
    history = json.loads(run("edition", "history", "weekly", *WEEK, "--json").stdout)
    assert [(c["who"], c["field"], c["card"], c["old"], c["new"]) for c in history] == [
        ("ana", "prompt", 1, "Do you think the truce will hold?", "Would you sign it?"),
        ("ben", "summary", 2, "A new plant opened.", "Opened <b>today</b>."),
        ("ben", "title", 2, "Chip plant opens", "A chip plant opens"),
        ("ana", "intro", None, "", "A <script>calm</script> week."),
    ]
    assert history[0]["at"] == "2026-11-30T08:00:00+00:00"
    text = run("edition", "history", "weekly", *WEEK).stdout
    assert "2026-11-30T08:00:00+00:00  ana  card 1 prompt" in text
    # The email shows the editor's words as text, never as markup.
    compiled = compile_template(ROOT / "templates", "weekly")
    email = render_email(compiled, config, edition, ["politics", "tech"])
    assert "A &lt;script&gt;calm&lt;/script&gt; week." in email.html and "<script" not in email.html
    assert "Opened &lt;b&gt;today&lt;/b&gt;." in email.html
    assert "Would you sign it?" in email.html and "A <script>calm</script> week." in email.text


def test_changes_are_refused_after_approval_and_once_deliveries_exist(
    run: Run, built: None, store: Store
) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            insert(deliveries).values(
                edition_key="weekly/2026-W48",
                subscriber_id=1,
                email="a@example.com",
                content_key="k",
                state="pending",
                created_at=MONDAY,
                updated_at=MONDAY,
            )
        )
    before = store.editions.get("weekly/2026-W48")
    err = run("edition", "set", "weekly", *WEEK, "--intro", "Hi", expect=2).stderr
    assert "has deliveries; it can no longer be changed" in err
    with pytest.raises(UsageError, match="has deliveries"):  # the store itself refuses too
        store.editions.update(set_intro(before, "Hi", who="x", at=MONDAY))  # type: ignore[arg-type]
    assert store.editions.get("weekly/2026-W48") == before


def test_approved_editions_refuse_edits(run: Run, built: None) -> None:
    run("edition", "approve", "weekly", *WEEK)
    err = run("edition", "set", "weekly", *WEEK, "--card", "1", "--title", "X", expect=2).stderr
    assert "is approved; it can no longer be changed" in err
    assert "no changes by editors" in run("edition", "history", "weekly", *WEEK).stdout


def test_bad_edits_name_what_is_wrong(run: Run, built: None, store: Store) -> None:
    edition = store.editions.get("weekly/2026-W48")
    assert edition is not None
    with pytest.raises(NotFoundError, match="has no card 9"):
        set_card(edition, 9, "title", "X", who="a", at=MONDAY)
    with pytest.raises(UsageError, match="--prompt: give some text"):
        set_card(edition, 1, "prompt", "   ", who="a", at=MONDAY)
    err = run("edition", "set", "weekly", *WEEK, "--prompt", "Why?", expect=2).stderr
    assert "--prompt, --summary and --title need --card N" in err
    assert store.editions.get("weekly/2026-W48") == edition
