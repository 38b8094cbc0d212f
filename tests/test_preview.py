"""`digest preview`: the email one subscriber would get, written to files with real links."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from conftest import SECRET, Run
from editions import make_edition, sixty_article_edition

from digest import tokens
from digest.render import PREFERENCES, UNSUBSCRIBE
from digest.store import Store
from digest.subscriber import Subscriber

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
WEEK = ("weekly", "--week", "2026-W48")


def _subscriber(store: Store, email: str = "ana@example.com", **fields: object) -> Subscriber:
    values: dict[str, object] = {"topics": ("politics", "economy"), "name": "Ana"} | fields
    return store.subscribers.add(Subscriber(email=email, **values), now=NOW)  # type: ignore[arg-type]


def test_preview_writes_html_and_text_with_real_signed_links(
    run: Run, store: Store, project: Path
) -> None:
    store.editions.save(make_edition(n_per_topic=2, topics=("politics", "tech", "economy")))
    ana = _subscriber(store)
    result = run("preview", *WEEK, "--subscriber", "Ana@Example.com")
    folder = project / "preview" / "weekly" / "2026-W48"
    html = (folder / "ana@example.com.html").read_text(encoding="utf-8")
    text = (folder / "ana@example.com.txt").read_text(encoding="utf-8")
    size = len(html.encode("utf-8")) / 1024
    assert result.output.splitlines()[:4] == [
        f"html: {folder / 'ana@example.com.html'} ({size:.1f} KB)",
        f"text: {folder / 'ana@example.com.txt'}",
        "subject: Prism Weekly: The Week in Review, Nov 23–Nov 29",
        "articles: 4 in 2 sections",
    ]
    assert UNSUBSCRIBE not in html + text and PREFERENCES not in html + text
    unsubscribe = re.search(r"Unsubscribe: (https://digest\.example\.com/u/(\S+))", text)
    assert unsubscribe is not None
    assert f'href="{unsubscribe.group(1)}"' in html
    payload = tokens.read_token(SECRET, "unsubscribe", unsubscribe.group(2))
    assert payload == {"s": ana.id, "e": "weekly/2026-W48"}
    preferences = re.search(r"preferences: https://digest\.example\.com/p/(\S+)", text)
    assert preferences is not None
    assert tokens.read_token(SECRET, "preferences", preferences.group(1))["s"] == ana.id
    assert "TECHNOLOGY" not in text and "POLITICS" in text and "ECONOMY" in text


def test_preview_writes_into_the_folder_given(run: Run, store: Store, tmp_path: Path) -> None:
    store.editions.save(make_edition())
    _subscriber(store)
    out = tmp_path / "elsewhere"
    result = run("preview", *WEEK, "--subscriber", "ana@example.com", "--out", str(out))
    assert (out / "ana@example.com.html").exists() and (out / "ana@example.com.txt").exists()
    assert f"text: {out / 'ana@example.com.txt'}" in result.output


def test_preview_prints_size_warnings(run: Run, store: Store) -> None:
    store.editions.save(sixty_article_edition())
    _subscriber(store, topics=("politics", "tech", "economy", "climate", "culture", "health"))
    result = run("preview", *WEEK, "--subscriber", "ana@example.com")
    assert "warning: dropped " in result.output
    assert "lowest-ranked articles to stay under 102 KB: #" in result.output


def test_preview_of_an_unsubscribed_reader_says_a_send_would_skip_them(
    run: Run, store: Store
) -> None:
    store.editions.save(make_edition())
    _subscriber(store, status="unsubscribed")
    result = run("preview", *WEEK, "--subscriber", "ana@example.com")
    assert "note: subscriber is unsubscribed: a real send would skip them" in result.output


def test_preview_of_an_edition_not_built_says_how_to_build_it(run: Run, store: Store) -> None:
    _subscriber(store)
    result = run("preview", *WEEK, "--subscriber", "ana@example.com", expect=2)
    assert "error: no edition weekly/2026-W48" in result.output
    assert "hint: digest build weekly --week 2026-W48" in result.output


def test_preview_of_an_unknown_subscriber_fails(run: Run, store: Store, project: Path) -> None:
    store.editions.save(make_edition())
    result = run("preview", *WEEK, "--subscriber", "nobody@example.com", expect=2)
    assert "error: no subscriber 'nobody@example.com'" in result.output
    assert not (project / "preview").exists()


def test_preview_of_an_unknown_digest_lists_the_known_ones(run: Run) -> None:
    result = run("preview", "monthly", "--week", "2026-W48", "--subscriber", "a@b.c", expect=2)
    assert "digests: no digest 'monthly' (known: weekly)" in result.output


def test_preview_for_a_reader_of_none_of_the_editions_topics_fails(run: Run, store: Store) -> None:
    store.editions.save(make_edition(topics=("politics",)))
    _subscriber(store, topics=("health",))
    result = run("preview", *WEEK, "--subscriber", "ana@example.com", expect=2)
    assert "error: ana@example.com follows no topic of weekly/2026-W48" in result.output
    assert "hint: the edition has: politics" in result.output


def test_preview_requires_week_and_subscriber(run: Run) -> None:
    result = run("preview", "weekly", "--subscriber", "ana@example.com", expect=2)
    assert "Missing option '--week'" in result.output
