"""Ingest: each format becomes clean articles; a broken source is named, stores nothing."""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from digest.articles import Article, article_id
from digest.config import Config, Source, load_config
from digest.errors import ConfigError, ExitCode
from digest.sources import READERS, IngestReport, ingest, reader_for
from digest.sources.normalize import map_topics
from digest.store import Store, open_store
from digest.text import lead

DATA = Path(__file__).parent / "data" / "ingest"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
TOPICS = ("politics", "tech", "economy", "climate", "culture", "health")


def _configure(project: Path, sources: list[dict[str, Any]]) -> Config:
    """Point the temp project's digest.yaml at these sources only."""
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["sources"] = sources
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path)


def _fixture(project: Path, name: str) -> str:
    """Copy a test-only fixture into the project; return its path relative to digest.yaml."""
    (project / "fixtures").mkdir(exist_ok=True)
    shutil.copy(DATA / name, project / "fixtures" / name)
    return f"fixtures/{name}"


def _by_title(store: Store) -> dict[str, Article]:
    articles = store.articles.between(NOW - timedelta(days=400), NOW + timedelta(days=400))
    return {a.title: a for a in articles}


def _ingest_only(
    project: Path, sources: list[dict[str, Any]]
) -> tuple[IngestReport, dict[str, Article]]:
    """Ingest just these sources into the project's store; the report and articles by title."""
    config = _configure(project, sources)
    with closing(open_store(config.store_url)) as store:
        return ingest(config, store, now=NOW), _by_title(store)


# -- each format ----------------------------------------------------------------------------


def test_rss_items_carry_categories_and_digest_extension_elements(
    config: Config, store: Store
) -> None:
    report = ingest(config, store, now=NOW, names=["Prism Wire"])
    assert [(s.name, s.added) for s in report.sources] == [("Prism Wire", 12)]
    copper = _by_title(store)["Copper hits three-year high on Chilean mine outage"]
    assert copper.topics == ("economy",)  # "Markets" is an alias
    assert copper.labels == ("AI Analysis",) and copper.ai_generated
    assert copper.read_minutes == 2  # <digest:readMinutes>, not the word count
    assert copper.thoughts == (
        "Is this a blip or a trend? What would tell you which?",
        "Who passes the cost on first: cable makers or builders?",
    )
    assert copper.sources == ("Prism Wire",) and copper.id == article_id(copper.url)
    assert copper.published_at == datetime(2026, 11, 17, 16, 40, tzinfo=UTC)
    drills = _by_title(store)["South Korea and Japan resume naval drills after nine years"]
    assert drills.topics == ("politics",)  # "Defense" maps, "Asia" is ignored
    assert drills.image == "https://images.example.net/2026/11/naval-drills.jpg"


def test_atom_entries_use_published_date_in_utc_and_enclosure_image(
    config: Config, store: Store
) -> None:
    ingest(config, store, now=NOW, names=["Global Desk"])
    articles = _by_title(store)
    rescue = articles["Seoul and Tokyo restart joint naval rescue exercises after 9-year pause"]
    assert (rescue.topics, rescue.sources) == (("politics",), ("Global Desk",))
    assert rescue.published_at == datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
    solar = articles["Spain switches on Europe's largest floating solar farm"]
    assert solar.image == "https://images.example.net/2026/11/floating-solar.jpg"
    assert solar.thoughts == ("Which trade-off here do you find hardest to accept?",)
    scribes = articles["Hospitals trial AI scribes to cut doctors' paperwork"]
    assert scribes.topics == ("tech", "health")


def test_json_feed_items_read_tags_and_the_digest_extension(config: Config, store: Store) -> None:
    report = ingest(config, store, now=NOW, names=["daily briefing"])  # names match any case
    assert report.sources[0].added == 11 and report.ok
    articles = _by_title(store)
    moldova = articles["Moldova opens EU accession talks on rule of law"]
    assert moldova.id == article_id("briefing-moldova-eu-rule-of-law-chapter")
    assert moldova.thoughts[1] == "What would have to happen for Moldova to join within five years?"
    hiv = articles["Regulators approve twice-yearly HIV prevention injection"]
    assert hiv.read_minutes == 3
    assert hiv.image == "https://images.example.net/2026/11/hiv-injection.jpg"
    ships = articles["Shipping lines order a record number of methanol-ready vessels"]
    assert ships.topics == ("economy", "climate")


def test_markdown_front_matter_fills_every_field(config: Config, store: Store) -> None:
    ingest(config, store, now=NOW, names=["Prism Analysis"])
    articles = _by_title(store)
    heat = articles["Heat pumps outsell gas boilers in Germany for the first time"]
    assert heat.pinned and heat.priority == 0 and heat.read_minutes == 2
    assert heat.topics == ("climate",)
    assert heat.thoughts == ("What is one choice you would make differently after reading this?",)
    assert heat.body_html.startswith("<p>Germans bought 112,000 heat pumps")
    assert "<h2>What changed</h2>" in heat.body_html
    liability = articles["Open-weight AI models and the question of who is liable"]
    assert liability.priority == 2 and liability.ai_generated
    assert liability.sources == ("Global Desk",)  # front matter `source` credits the outlet
    assert liability.id == article_id(liability.url)
    yen = articles["Why a strong yen is suddenly Japan's problem again"]
    assert yen.topics == ("economy",) and yen.labels == ("AI Analysis",)  # strings, not lists


def test_markdown_without_url_or_id_is_keyed_by_its_relative_path(project: Path) -> None:
    folder = project / "notes" / "2026"
    folder.mkdir(parents=True)
    (folder / "memo.md").write_text(
        "---\ntitle: Local memo\ndate: 2026-11-24\ntopics: [Books]\n---\n\nShort memo text.\n"
    )
    report, articles = _ingest_only(
        project, [{"name": "Notes", "type": "markdown", "path": "notes"}]
    )
    memo = articles["Local memo"]
    assert report.sources[0].added == 1
    assert (memo.id, memo.url) == (article_id("2026/memo.md"), "")
    # a bare date is midnight in the site's time zone (Europe/London: UTC+0 in November)
    assert memo.published_at == datetime(2026, 11, 24, tzinfo=UTC)
    assert memo.topics == ("culture",)


# -- idempotence and updates ----------------------------------------------------------------


def test_reingesting_the_same_sources_changes_nothing(config: Config, store: Store) -> None:
    first = ingest(config, store, now=NOW)
    rows = store.articles.count()
    second = ingest(config, store, now=NOW + timedelta(hours=1))
    assert first.added == rows == 47
    assert (second.added, second.updated, second.unchanged) == (0, 0, 47)
    assert store.articles.count() == rows


def test_an_edited_entry_is_updated_in_place(project: Path, config: Config, store: Store) -> None:
    ingest(config, store, now=NOW)
    feed_path = project / "examples" / "feeds" / "daily-briefing.json"
    feed = json.loads(feed_path.read_text())
    feed["items"][0]["title"] = "Early snow closes Alpine passes for a second night"
    feed_path.write_text(json.dumps(feed))
    report = ingest(config, store, now=NOW + timedelta(hours=1), names=["Daily Briefing"])
    assert (report.added, report.updated, report.unchanged) == (0, 1, 10)
    assert store.articles.count() == 47
    edited = store.articles.get(article_id("briefing-alpine-passes-early-snow"))
    assert edited is not None and edited.title.endswith("for a second night")


# -- normalizing ----------------------------------------------------------------------------


def test_categories_match_topic_key_name_or_alias_in_any_case(config: Config) -> None:
    assert map_topics(("TECH", "Technology", "science-tech"), config) == ("tech",)
    assert map_topics(("Environment", "World", "Unknown"), config) == ("climate", "politics")
    assert map_topics(("Culture",), config) == ("culture",)
    assert map_topics(("sport",), config) == ()


def test_uncategorised_entries_take_the_source_topic_and_a_bad_date_is_listed(
    project: Path,
) -> None:
    path = _fixture(project, "hostile.json")
    source = {"name": "H", "type": "jsonfeed", "path": path, "topic": "health"}
    report, articles = _ingest_only(project, [source])
    assert articles["Uncategorised item"].topics == ("health",)
    assert articles["Markup that should not survive"].topics == ("tech",)  # "GADGETS"
    assert [str(s) for s in report.sources[0].skipped] == [
        "fixtures/hostile.json: items[2] ('An item with a date nobody can read'): "
        "date_published: unparseable date '24/11/2026' (expected RFC 3339)"
    ]


def test_missing_summary_falls_back_to_the_body_lead_in_whole_sentences(
    config: Config, store: Store
) -> None:
    ingest(config, store, now=NOW, names=["Prism Wire"])
    mali = _by_title(store)["Desert music festival returns to Mali after a decade away"]
    assert mali.summary == (
        "The Festival au Désert, once one of West Africa's best-known music events, will return "
        "in January for the first time in ten years, its organisers announced on Sunday. It will "
        "be held near Ségou rather than at its former home outside Timbuktu."
    )


def test_lead_stops_at_a_sentence_boundary_and_never_cuts_a_word() -> None:
    text = "First sentence is short. " + "Second sentence runs on " * 20 + "until the end."
    assert lead(text) == "First sentence is short."
    cut = lead("word " * 100)
    assert cut.endswith("word…") and len(cut) <= 300
    assert lead("Short text.") == "Short text."


def test_read_minutes_come_from_the_word_count_unless_given(project: Path) -> None:
    folder = project / "long"
    folder.mkdir()
    body = "word " * 461  # 461 / 230 words a minute → 3 minutes
    (folder / "a.md").write_text(f"---\ntitle: Long\nid: a\ndate: 2026-11-24\n---\n{body}\n")
    (folder / "b.md").write_text("---\ntitle: Tiny\nid: b\ndate: 2026-11-24\n---\nOne.\n")
    (folder / "c.md").write_text(
        f"---\ntitle: Given\nid: c\ndate: 2026-11-24\nread_minutes: 9\n---\n{body}\n"
    )
    _, articles = _ingest_only(project, [{"name": "Long", "type": "markdown", "path": "long"}])
    minutes = {title: a.read_minutes for title, a in articles.items()}
    assert minutes == dict(Long=3, Tiny=1, Given=9)


def test_sanitizing_removes_scripts_styles_and_event_handlers(project: Path) -> None:
    path = _fixture(project, "hostile.json")
    _, articles = _ingest_only(project, [{"name": "Hostile", "type": "jsonfeed", "path": path}])
    article = articles["Markup that should not survive"]
    body = article.body_html
    banned = "<script document.cookie <style color:red onclick onerror <iframe javascript:"
    assert [word for word in banned.split() if word in body] == []
    assert '<a href="https://hostile.example.net/more" rel="noopener">more</a>' in body
    assert '<img src="https://hostile.example.net/i.png" alt="chart">' in body
    assert article.summary == "A bold claim & a quiet one."
    assert article.published_at == datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


# -- failures -------------------------------------------------------------------------------


def test_a_malformed_feed_is_reported_by_name_and_the_others_still_ingest(
    project: Path, run: Any
) -> None:
    config = load_config(project / "digest.yaml")
    sources = [s.model_dump(exclude_none=True) for s in config.sources]
    broken_rss = _fixture(project, "malformed.rss")
    broken_json = _fixture(project, "invalid.json")
    sources[1:1] = [
        {"name": "Broken Wire", "type": "rss", "path": broken_rss},
        {"name": "Broken Briefing", "type": "jsonfeed", "path": broken_json},
    ]
    config = _configure(project, sources)
    result = run("ingest", expect=ExitCode.BAD_INPUT)
    assert (
        "error: Broken Wire: fixtures/malformed.rss:4: not well-formed XML: mismatched tag"
        in result.stderr
    )
    assert (
        "error: Broken Briefing: fixtures/invalid.json:5: invalid JSON: "
        "Expecting property name enclosed in double quotes (column 82)" in result.stderr
    )
    assert "Broken Wire: failed, nothing stored" in result.stdout
    assert "Prism Wire: 12 added, 0 updated, 0 unchanged, 1 skipped" in result.stdout
    assert "total: 47 added, 0 updated, 0 unchanged, 3 skipped, 2 sources failed" in result.stdout
    with closing(open_store(config.store_url)) as store:
        assert store.articles.count() == 47
        assert "An item after the fault" not in _by_title(store)


def test_broken_entries_are_skipped_and_listed_with_file_and_reason(run: Any) -> None:
    result = run("ingest")
    assert result.stderr.splitlines() == [
        "warning: Prism Wire: skipped examples/feeds/prism-wire.rss: "
        "item 4 ('Markets open higher in Asia'): no link",
        "warning: Global Desk: skipped examples/feeds/global-desk.atom: "
        "entry 3 ('Our weekend reading list'): unparseable date 'sometime last week'",
        "warning: Prism Analysis: skipped examples/articles/2026-11-25-budget-briefing.md:6: "
        "invalid YAML front matter: expected ',' or ']', but got ':' "
        "(parsing a flow sequence that starts on line 5)",
    ]
    assert result.stdout.splitlines() == [
        "Prism Wire: 12 added, 0 updated, 0 unchanged, 1 skipped",
        "Prism Wire: categories with no topic: Asia (1), Europe (1)",
        "Global Desk: 12 added, 0 updated, 0 unchanged, 1 skipped",
        "Daily Briefing: 11 added, 0 updated, 0 unchanged, 0 skipped",
        "Prism Analysis: 12 added, 0 updated, 0 unchanged, 1 skipped",
        "total: 47 added, 0 updated, 0 unchanged, 3 skipped",
    ]


def test_a_missing_folder_or_file_fails_only_that_source(project: Path) -> None:
    report, _ = _ingest_only(
        project,
        [
            {"name": "Gone", "type": "markdown", "path": "no/such/folder"},
            {"name": "Wire", "type": "rss", "path": "examples/feeds/prism-wire.rss"},
            {"name": "Missing", "type": "atom", "path": "examples/feeds/missing.atom"},
        ],
    )
    assert [(s.name, s.error) for s in report.failed] == [
        ("Gone", "no/such/folder: folder not found"),
        ("Missing", "examples/feeds/missing.atom: file not found"),
    ]
    assert report.sources[1].added == 12 and not report.ok


def test_an_unknown_source_name_lists_the_known_ones(run: Any) -> None:
    result = run("ingest", "--source", "Nope", expect=ExitCode.BAD_INPUT)
    assert (
        "no source named 'Nope' (known: Prism Wire, Global Desk, Daily Briefing, Prism Analysis)"
        in result.stderr
    )


def test_an_unknown_reader_type_is_a_config_error_listing_valid_types() -> None:
    source = Source.model_construct(name="OPML", type="opml", path="x.opml", url=None, topic=None)
    with pytest.raises(ConfigError) as info:
        reader_for(source)
    assert "unknown source type 'opml' (valid: atom, jsonfeed, markdown, rss)" in str(info.value)
    assert set(READERS) == {"rss", "atom", "jsonfeed", "markdown"}


def test_only_the_named_sources_are_read(run: Any, project: Path) -> None:
    result = run("ingest", "--source", "Global Desk", "--json")
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["sources"]] == ["Global Desk"]
    assert report["sources"][0]["added"] == 12 and report["ok"] is True


# -- http -----------------------------------------------------------------------------------


@pytest.fixture
def feed_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server for the example feeds; yields its base URL and seen User-Agents."""
    root = Path(__file__).resolve().parent.parent / "examples" / "feeds"
    agents: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            agents.append(self.headers.get("User-Agent", ""))
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", agents
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_feeds_are_fetched_over_http_and_a_404_names_the_url(
    project: Path, feed_server: tuple[str, list[str]]
) -> None:
    base, agents = feed_server
    report, _ = _ingest_only(
        project,
        [
            {"name": "Remote Wire", "type": "rss", "url": f"{base}/prism-wire.rss"},
            {"name": "Remote JSON", "type": "jsonfeed", "url": f"{base}/daily-briefing.json"},
            {"name": "Gone", "type": "atom", "url": f"{base}/gone.atom"},
        ],
    )
    assert [s.added for s in report.sources[:2]] == [12, 11]
    assert report.sources[2].error == f"{base}/gone.atom: HTTP 404 File not found"
    assert len(agents) == 3 and all(a.startswith("digest/") for a in agents)


# -- the sample data ------------------------------------------------------------------------


def test_sample_articles_cover_every_topic_in_each_demo_week(config: Config, store: Store) -> None:
    report = ingest(config, store, now=NOW)
    articles = list(_by_title(store).values())
    assert report.ok and report.added == len(articles) == 47
    weeks = Counter(a.published_at.isocalendar()[:2] for a in articles)
    assert weeks == {(2026, 46): 13, (2026, 47): 13, (2026, 48): 21}
    per_topic = Counter((a.published_at.isocalendar()[1], t) for a in articles for t in a.topics)
    thin = [(w, t) for w in (46, 47, 48) for t in TOPICS if per_topic[(w, t)] < 2]
    assert thin == []
    ai = [a for a in articles if a.ai_generated]
    assert len(ai) >= 6 and all("AI Analysis" in a.labels for a in ai)
    assert sum(bool(a.thoughts) for a in articles) >= 10
    assert any(a.pinned for a in articles) and any(a.priority for a in articles)
    asks = ("The question becomes whether", "It remains to be seen", "What is unclear is")
    assert sum(any(q in a.body_html for q in asks) for a in articles) >= 10
    assert all(re.match(r"https://[a-z.]*\bexample\.(com|org|net)/", a.url) for a in articles)
