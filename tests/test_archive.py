"""The archive: edition pages ("view in browser"), the list, the Atom feed, the per-digest
`archive` setting, and `digest export-archive`; in Flask, in real Chromium and in feedparser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import feedparser
import pytest
from browser import chromium
from conftest import SECRET, Run
from editions import make_edition
from flask.testing import FlaskClient
from test_browser import server  # noqa: F401
from test_events import sent_delivery
from test_web import NOW

from digest.config import Config, load_config
from digest.render import compile_template, render_email
from digest.store import Store
from digest.subscribers import Subscriber
from digest.web import create_app

TOPICS = ("politics", "tech", "climate")
W48 = "/archive/weekly/2026-W48/"


@pytest.fixture
def published(store: Store) -> Store:
    """Two sent editions (W47, W48) and one built but never sent (W49)."""
    reader = store.subscribers.add(Subscriber(email="r@example.com", topics=TOPICS), now=NOW)
    for period, sent in (("2026-W47", True), ("2026-W48", True), ("2026-W49", False)):
        edition = make_edition(2, TOPICS, period=period)
        store.editions.save(edition)
        if sent:  # content key tech|A
            sent_delivery(store, reader, reader.email, f"m-{period}", edition_key=edition.key)
    return store


def with_archive(project: Path, mode: str) -> Config:
    path = project / "digest.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("    max_articles: 18\n", f"    max_articles: 18\n    archive: {mode}\n")
    )
    return load_config(path)


def client_for(config: Config, store: Store) -> FlaskClient:
    return create_app(config, store, now=NOW, secret=SECRET).test_client()


def test_archive_lists_sent_editions_newest_first(config: Config, published: Store) -> None:
    page = client_for(config, published).get("/archive/").get_data(as_text=True)
    assert page.index('href="/archive/weekly/2026-W48/"') < page.index(
        'href="/archive/weekly/2026-W47/"'
    )
    assert "2026-W49" not in page  # built, never sent
    assert 'type="application/atom+xml"' in page and "/archive/weekly/feed.atom" in page
    assert '<meta name="robots"' not in page


def test_edition_page_shows_every_section_and_no_personal_link(
    config: Config, published: Store
) -> None:
    answer = client_for(config, published).get(W48)
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    assert "South Korea and Japan" in page and "Open-Source Model" in page
    assert "/u/" not in page and "/p/" not in page and "-unsubscribe_url-" not in page
    assert "View this email in your browser" not in page
    assert 'href="https://digest.example.com/subscribe"' in page
    assert '<meta name="viewport"' in page


def test_a_topic_mix_page_shows_only_those_sections(config: Config, published: Store) -> None:
    client = client_for(config, published)
    page = client.get(f"{W48}tech/").get_data(as_text=True)
    assert "Open-Source Model" in page and "South Korea and Japan" not in page
    # One address per page: unknown, reordered or complete mixes are not pages.
    for mix in ("gardening/", "tech+politics/", "politics+tech+climate/", "/"):
        assert client.get(f"{W48}{mix}").status_code == 404 or mix == "/"
    assert client.get("/archive/weekly/2026-W49/").status_code == 404
    assert client.get("/archive/nope/2026-W48/").status_code == 404


def test_the_feed_parses_with_feedparser(config: Config, published: Store) -> None:
    answer = client_for(config, published).get("/archive/weekly/feed.atom")
    assert answer.status_code == 200 and answer.mimetype == "application/atom+xml"
    feed = feedparser.parse(answer.get_data())
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10" and feed.feed.title == "Prism Weekly: The Week in Review"
    links = [e.link for e in feed.entries]
    assert links == [
        "https://digest.example.com/archive/weekly/2026-W48/",
        "https://digest.example.com/archive/weekly/2026-W47/",
    ]
    assert all(e.id == e.link and e.published_parsed for e in feed.entries)


def test_every_email_links_to_its_web_version_for_its_topic_mix(config: Config) -> None:
    compiled = compile_template(config.resolve(config.templates_dir), "weekly")
    edition = make_edition(2, TOPICS)
    email = render_email(compiled, config, edition, ("climate", "politics"))
    url = "https://digest.example.com/archive/weekly/2026-W48/politics+climate/"
    assert f'href="{url}"' in email.html and f"View in your browser: {url}" in email.text
    everything = render_email(compiled, config, edition, TOPICS)
    assert f'href="https://digest.example.com{W48}"' in everything.html


def test_unlisted_editions_are_reachable_by_link_only(project: Path, published: Store) -> None:
    client = client_for(with_archive(project, "unlisted"), published)
    assert "2026-W48" not in client.get("/archive/").get_data(as_text=True)
    assert client.get("/archive/weekly/").status_code == 404
    assert client.get("/archive/weekly/feed.atom").status_code == 404
    page = client.get(W48)
    assert page.status_code == 200 and page.headers["X-Robots-Tag"] == "noindex"


def test_archive_off_serves_nothing_and_emails_have_no_web_link(
    project: Path, published: Store
) -> None:
    config = with_archive(project, "off")
    client = client_for(config, published)
    for path in ("/archive/weekly/", "/archive/weekly/feed.atom", W48, f"{W48}tech/"):
        assert client.get(path).status_code == 404, path
    compiled = compile_template(config.resolve(config.templates_dir), "weekly")
    email = render_email(compiled, config, make_edition(2, TOPICS), TOPICS)
    assert "/archive/" not in email.html and "/archive/" not in email.text


def test_export_archive_writes_the_pages_serve_shows(
    run: Run, project: Path, config: Config, published: Store, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    result = run("export-archive", str(out))
    assert "for 2 editions" in result.output
    client = client_for(config, published)
    expected = {
        "index.html": "/archive/",
        "weekly/index.html": "/archive/weekly/",
        "weekly/feed.atom": "/archive/weekly/feed.atom",
        "daily/index.html": "/archive/daily/",  # the sample's other digest, nothing sent yet
        "daily/feed.atom": "/archive/daily/feed.atom",
        "weekly/2026-W48/index.html": W48,
        "weekly/2026-W48/tech/index.html": f"{W48}tech/",
        "weekly/2026-W47/index.html": "/archive/weekly/2026-W47/",
    }
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted([*expected, "weekly/2026-W47/tech/index.html"])
    for file, url in expected.items():
        assert (out / file).read_bytes() == client.get(url).get_data(), file
    assert not feedparser.parse((out / "weekly/feed.atom").read_bytes()).bozo


def test_export_archive_into_a_file_fails_and_writes_nothing(
    run: Run, published: Store, tmp_path: Path
) -> None:
    target = tmp_path / "taken"
    target.write_text("keep me")
    result = run("export-archive", str(target), expect=2)
    assert "is not a folder" in result.output or "is a file" in result.output
    assert target.read_text() == "keep me"


# -- in Chromium, against a real `digest serve` ------------------------------------------
@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium"), width=375) as context:
        yield context


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_a_reader_browses_the_archive_on_a_phone(
    browser: Any, published: Store, server: str, scheme: str
) -> None:
    page = browser.new_page()
    page.emulate_media(color_scheme=scheme)
    page.set_viewport_size({"width": 375, "height": 800})
    answer = page.goto(f"{server}/archive/", wait_until="load")
    assert answer.status == 200 and answer.headers["x-frame-options"] == "DENY"
    assert page.locator("h1").inner_text() == "Archive"
    page.locator("ol.editions a").first.click()
    page.wait_for_load_state("load")
    assert page.url.endswith(W48)
    assert page.locator("h1").first.inner_text() == "The Week in Review"
    assert page.locator("h3").count() == 6
    assert int(page.evaluate("document.documentElement.scrollWidth")) <= 375
    feed = page.goto(f"{server}/archive/weekly/feed.atom")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(feed.body())
    assert [e.link.rsplit("/archive", 1)[1] for e in parsed.entries] == [
        "/weekly/2026-W48/",
        "/weekly/2026-W47/",
    ]
    page.close()


def test_an_edition_is_published_from_its_first_sent_row_until_every_sent_row_is_withdrawn(
    store: Store,
) -> None:
    """The ledger keeps each edition's first sent time as its rows are recorded sent (the
    earliest wins, whatever the order) and as cancelled provider batches are withdrawn."""
    from datetime import timedelta

    from digest.transports.base import SendResult

    edition = make_edition(2, TOPICS)
    store.editions.save(edition)
    for i in range(4):
        store.subscribers.add(Subscriber(email=f"r{i}@example.com", topics=TOPICS), now=NOW)
    ledger = store.deliveries
    ledger.plan(edition.key, lambda _id, _topics: ("tech|A", "A"), now=NOW)
    ((_, ids),) = ledger.batches(edition.key, 4)
    early, late = NOW + timedelta(hours=2), NOW + timedelta(hours=3)  # scheduled sends

    def published_at() -> list[Any]:
        return [at for _edition, at in store.editions.published("weekly")]

    def send(batch: str, rows: list[int], at: Any) -> None:
        claimed, _ = ledger.claim(edition.key, rows, batch_id=batch, scheduled_at=at, now=NOW)
        assert claimed == set(rows)
        assert at not in published_at()  # claimed is not sent
        ledger.record([SendResult(r, True, batch) for r in rows], batch_id=batch, now=NOW)

    assert published_at() == []
    send("b-late", ids[:2], late)
    assert published_at() == [late]
    send("b-early", ids[2:], early)  # recorded later, sent earlier: the earliest wins
    assert published_at() == [early]
    assert [e.key for e, _ in store.editions.published("weekly", "2026-W48")] == [edition.key]
    assert ledger.release(edition.key, "b-early", now=NOW) == 2
    assert store.editions.published("weekly") == [(edition, late)]
    assert store.editions.published("weekly", "2026-W47") == []
    assert ledger.release(edition.key, "b-late", now=NOW) == 2
    assert store.editions.published("weekly") == []  # nothing of it went out


def test_archive_pages_read_no_delivery(config: Config, published: Store) -> None:
    """The list, a digest's list, its feed, an edition page and a topic mix page are read
    from the editions alone: a ledger of millions of rows costs them nothing."""
    from sqlalchemy import event

    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    client = client_for(config, published)
    event.listen(published.engine, "before_cursor_execute", seen)
    try:
        for path in ("/archive/", "/archive/weekly/", "/archive/weekly/feed.atom", W48,
                     W48 + "politics+tech/"):  # fmt: skip
            assert client.get(path).status_code == 200, path
    finally:
        event.remove(published.engine, "before_cursor_execute", seen)
    assert statements  # the pages did read the store
    assert [s for s in statements if "deliveries" in s] == []
