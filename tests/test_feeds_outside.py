"""Feeds written by others: truncated documents are refused whole, HTML entities and injected
markup are survived, Atom labels and unmapped categories are reported, the size cap is a
per-source setting, and summaries never stop at "Mr."."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from conftest import Run

from digest.config import load_config
from digest.sources import ingest
from digest.store import open_store
from digest.text import lead

NOW = datetime(2026, 11, 30, 9, tzinfo=UTC)

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>World</title><link>https://world.example.com/</link>
{items}
</channel></rss>
"""
ITEM = """<item><title>{title}</title><link>https://world.example.com/{n}</link>
<pubDate>Tue, 24 Nov 2026 0{n}:00:00 GMT</pubDate><category>{category}</category>
<description><![CDATA[<p>Fed chair Mr. Powell spoke&nbsp;on {title}. Markets moved.</p>
<img src=x onerror="alert(1)"><script>alert(2)</script><a href="javascript:alert(3)">x</a>]]>
</description></item>"""
ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Tech</title><id>urn:tech</id>
<updated>2026-11-24T10:00:00Z</updated>
<entry><title>Chip plant opens</title><id>urn:tech:1</id>
<link href="https://tech.example.com/1"/><updated>2026-11-24T10:00:00Z</updated>
<category term="https://tech.example.com/c/42" label="Technology"/>
<category term="https://tech.example.com/c/77" label="Crossword"/>
<summary>A new chip plant opened.</summary></entry>
</feed>
"""


def _items(n: int) -> str:
    categories = ["World", "Sport", "Sport", "World", "Obituaries", "World"]
    return "\n".join(
        ITEM.format(n=i, title=f"Story {i}", category=categories[i % len(categories)])
        for i in range(n)
    )


def _project(project: Path, sources: list[dict[str, Any]], files: dict[str, str]) -> Path:
    for name, text in files.items():
        (project / name).write_text(text, encoding="utf-8")
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["sources"] = sources
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _stored(path: Path) -> dict[str, Any]:
    config = load_config(path)
    with closing(open_store(config.store_url)) as store:
        found = store.articles.between(datetime(2026, 1, 1, tzinfo=UTC), NOW)
    return {a.title: a for a in found}


def test_a_truncated_feed_is_refused_whole_by_name_and_the_others_still_ingest(
    project: Path, run: Run
) -> None:
    whole = RSS.format(items=_items(6))
    cut = whole[: whole.index("<item><title>Story 4")] + "<item><title>Story 4</ti"
    path = _project(
        project,
        [
            {"name": "World", "type": "rss", "path": "world.rss"},
            {"name": "Cut", "type": "rss", "path": "cut.rss"},
            {"name": "Tech", "type": "atom", "path": "tech.atom"},
        ],
        {
            "world.rss": whole,
            "cut.rss": cut.replace("world.example.com", "cut.example.com"),
            "tech.atom": ATOM,
        },
    )
    result = run("ingest", expect=2)
    assert "Cut: failed, nothing stored" in result.stdout
    assert "error: Cut: cut.rss:" in result.stderr and "not well-formed XML" in result.stderr
    stored = _stored(path)
    assert not any(a.url.startswith("https://cut.") for a in stored.values())
    assert sum(a.url.startswith("https://world.") for a in stored.values()) == 6
    assert "Chip plant opens" in stored


def test_entities_injected_markup_and_abbreviations_survive_into_clean_summaries(
    project: Path, run: Run
) -> None:
    path = _project(
        project,
        [{"name": "World", "type": "rss", "path": "w.rss"}],
        {"w.rss": RSS.format(items=_items(2))},
    )
    run("ingest")
    story = _stored(path)["Story 0"]
    assert story.summary == "Fed chair Mr. Powell spoke on Story 0. Markets moved. x"
    for bad in ("<script", "onerror", "javascript:"):
        assert bad not in story.body_html


def test_lead_never_stops_at_an_abbreviation() -> None:
    text = "Fed chair Mr. Powell said rates would stay high. " + "More detail follows here. " * 20
    assert lead(text, 60) == "Fed chair Mr. Powell said rates would stay high."


def test_unmapped_categories_are_listed_by_name_in_ingest_and_check(
    project: Path, run: Run
) -> None:
    _project(
        project,
        [
            {"name": "World", "type": "rss", "path": "w.rss"},
            {"name": "Tech", "type": "atom", "path": "t.atom"},
        ],
        {"w.rss": RSS.format(items=_items(6)), "t.atom": ATOM},
    )
    check = run("check").stdout
    assert "World: categories with no topic: Sport (2), Obituaries (1)" in check
    assert "Tech: categories with no topic: Crossword (1)" in check
    out = run("ingest").stdout
    assert "World: categories with no topic: Sport (2), Obituaries (1)" in out


def test_atom_category_labels_map_to_topics(project: Path, run: Run) -> None:
    path = _project(project, [{"name": "Tech", "type": "atom", "path": "t.atom"}], {"t.atom": ATOM})
    run("ingest")
    chip = _stored(path)["Chip plant opens"]
    assert chip.topics == ("tech",) and chip.categories == ("Technology", "Crossword")


def test_the_size_cap_is_a_per_source_setting(project: Path, run: Run) -> None:
    feed = RSS.format(items=_items(6))
    path = _project(
        project,
        [
            {"name": "Small", "type": "rss", "path": "w.rss", "max_bytes": 2048},
            {"name": "Default", "type": "rss", "path": "w2.rss"},
        ],
        {"w.rss": feed, "w2.rss": feed.replace("world.example", "other.example")},
    )
    result = run("ingest", expect=2)
    assert "more than the 2048 allowed" in result.stderr
    assert load_config(path).sources[1].max_bytes == 10 * 1024 * 1024
    config = load_config(path)
    with closing(open_store(config.store_url)) as store:
        report = ingest(config, store, now=NOW)
    assert [s.ok for s in report.sources] == [False, True]
