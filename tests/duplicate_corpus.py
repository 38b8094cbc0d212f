"""The labelled near-duplicate corpus (tests/data/duplicates.yaml) as Articles, and how well
a set of thresholds sorts it: each split is grouped as one week, the way selection does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from digest.articles import Article, article_id
from digest.duplicates import Features, Thresholds, candidates, join

CORPUS = Path(__file__).parent / "data" / "duplicates.yaml"
MONDAY = datetime(2026, 11, 23, 6, tzinfo=UTC)


@dataclass(frozen=True)
class Pair:
    a: Article
    b: Article
    same: bool


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    missed: tuple[Pair, ...]  # same story, kept apart
    merged: tuple[Pair, ...]  # different stories, merged

    def __str__(self) -> str:
        return f"precision {self.precision:.2f}, recall {self.recall:.2f}"


def load(split: str) -> tuple[list[Article], list[Pair]]:
    """The articles of one split (each text once) and its labelled pairs."""
    rows = [p for p in yaml.safe_load(CORPUS.read_text())["pairs"] if p["split"] == split]
    articles: dict[str, Article] = {}

    def article(d: dict[str, Any], at: datetime, source: str) -> Article:
        key = d["title"]
        if key not in articles:
            url = f"https://{source.lower()}.example.com/{article_id(key)}"
            articles[key] = Article(
                id=article_id(key),
                url=url,
                title=d["title"],
                summary=d["summary"],
                body_html=d.get("body", ""),
                published_at=at,
                topics=("politics",),
                sources=(source,),
            )
        return articles[key]

    pairs = []
    for n, row in enumerate(rows):
        a = article(row["a"], MONDAY + timedelta(hours=n), "Paper")
        b = article(row["b"], a.published_at + timedelta(hours=row.get("hours", 6)), "Wire")
        pairs.append(Pair(a, b, bool(row["same"])))
    return list(articles.values()), pairs


@cache
def _compared(
    split: str,
) -> tuple[list[Article], list[Pair], list[tuple[int, int, Features | None]]]:
    articles, pairs = load(split)
    return articles, pairs, list(candidates(articles))


def evaluate(split: str, thresholds: Thresholds) -> Score:
    articles, pairs, compared = _compared(split)
    stories = join(articles, compared, thresholds)
    story = {a.id: n for n, members in enumerate(stories) for a in members}
    missed = tuple(p for p in pairs if p.same and story[p.a.id] != story[p.b.id])
    merged = tuple(p for p in pairs if not p.same and story[p.a.id] == story[p.b.id])
    same = sum(p.same for p in pairs)
    found = same - len(missed)
    precision = found / (found + len(merged)) if found + len(merged) else 1.0
    return Score(precision, found / same, missed, merged)
