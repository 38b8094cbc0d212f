"""Near-duplicates: one story retold by several outlets, found through an index, not all pairs.

Each article becomes a TF-IDF vector of its title, summary and the opening of its body
(IDF over the articles being compared, e.g. the week). Candidate pairs come from an
inverted index of each article's highest-weighted terms, limited to articles published
within WINDOW of each other, so the work grows with the number of articles, not its square.
A candidate pair is one story when its vectors are close (COSINE_SURE), or fairly close
and the two name the same people, places and figures (COSINE_LIKELY + NAMES_LIKELY).

The thresholds were chosen on the "tune" half of the labelled corpus in
tests/data/duplicates.yaml (`python bench/duplicates.py` shows the search); the "holdout"
half was never used to choose them, and tests/test_duplicates.py asserts precision and
recall on it.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

from digest.articles import Article
from digest.text import names, plain_text, stem, stems

WINDOW = timedelta(days=4)  # a retelling comes within days; a follow-up a week on is a new story
TOP_TERMS = 16  # each article is indexed under this many of its highest-weighted terms
BODY_CHARS = 1500  # the opening of the body that is compared (HTML characters)
BODY_WORDS = 60
MAX_POSTING = 100  # a term among the top terms of more articles than this tells nothing
MIN_TOP_SHARED = 2  # a pair is compared when it shares this many of those top terms
MIN_SHARED = 4  # fewer shared terms than this is never one story ("Markets rally"/"slump")


@dataclass(frozen=True)
class Thresholds:
    cosine_sure: float = 0.52  # alone means one story
    cosine_likely: float = 0.32  # ... means one story when the names agree this much:
    names_likely: float = 0.60


CHOSEN = Thresholds()


# Headlines that move opposite ways tell different stories ("Markets rally"/"Markets slump").
_DIRECTIONS = {
    "up": "rise rises rose risen rally rallies surge surges jump jumps climb climbs gain gains "
    "soar soars raise raises increase increases lift lifts boost boosts",
    "down": "fall falls fell fallen slump slumps drop drops plunge plunges tumble tumbles slide "
    "slides sink sinks cut cuts lower lowers decrease decreases slash slashes slow slows "
    "lose loses",
    "steady": "hold holds held keep keeps kept steady unchanged pause pauses",
}
_DIRECTION = {stem(w): d for d, words in _DIRECTIONS.items() for w in words.split()}


@dataclass(frozen=True)
class Features:
    """How alike two articles are; what the thresholds are applied to."""

    cosine: float
    names: float
    shared: int
    opposite: bool = False  # the headlines move different ways

    def same(self, t: Thresholds = CHOSEN) -> bool:
        if self.shared < MIN_SHARED or self.opposite:
            return False
        return self.cosine >= t.cosine_sure or (
            self.cosine >= t.cosine_likely and self.names >= t.names_likely
        )


@dataclass
class _Doc:
    url: str
    terms: Counter[str]
    names: frozenset[str]
    at: float
    vector: dict[str, float]
    direction: frozenset[str]


def group(ranked: Sequence[Article], t: Thresholds = CHOSEN) -> list[list[Article]]:
    """Stories: each a list of articles, best-ranked first; stories in order of their best.

    `ranked` is best first. An article joins a story when it is the same story as any
    article already in it.
    """
    return join(ranked, candidates(ranked), t)


def join(
    ranked: Sequence[Article],
    pairs: Iterable[tuple[int, int, Features | None]],
    t: Thresholds = CHOSEN,
) -> list[list[Article]]:
    """Stories from compared `pairs` (see `candidates`) under thresholds `t`."""
    parent = list(range(len(ranked)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, features in pairs:
        if features is None or features.same(t):
            a, b = root(i), root(j)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the best-ranked member stays the root
    stories: dict[int, list[Article]] = defaultdict(list)
    for i, article in enumerate(ranked):
        stories[root(i)].append(article)
    return [stories[r] for r in sorted(stories)]


def same_story(a: Article, b: Article, t: Thresholds = CHOSEN) -> bool:
    """Whether two articles tell one story (compared as a corpus of two)."""
    return len(group([a, b], t)) == 1


def candidates(articles: Sequence[Article]) -> Iterator[tuple[int, int, Features | None]]:
    """Pairs (i < j) worth comparing, with their features; None means one canonical URL."""
    docs = [_doc(a) for a in articles]
    _weigh(docs)
    by_url: dict[str, int] = {}
    for i, d in enumerate(docs):
        if d.url:
            if d.url in by_url:
                yield by_url[d.url], i, None
            else:
                by_url[d.url] = i
    postings: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(docs):
        for term, _weight in heapq.nlargest(TOP_TERMS, d.vector.items(), key=_by_weight):
            postings[term].append(i)
    window = WINDOW.total_seconds()
    together: Counter[tuple[int, int]] = Counter()
    for members in postings.values():
        if not 2 <= len(members) <= MAX_POSTING:
            continue
        members.sort(key=lambda i: docs[i].at)
        for x, i in enumerate(members):  # sorted by time: stop at the end of the window
            for j in members[x + 1 :]:
                if docs[j].at - docs[i].at > window:
                    break
                together[(i, j) if i < j else (j, i)] += 1
    for (i, j), count in together.items():
        if count >= MIN_TOP_SHARED:
            yield i, j, features(docs[i], docs[j])


def _by_weight(item: tuple[str, float]) -> tuple[float, str]:
    return item[1], item[0]


def features(a: _Doc, b: _Doc) -> Features:
    small, large = (a, b) if len(a.vector) <= len(b.vector) else (b, a)
    cosine = sum(w * large.vector.get(term, 0.0) for term, w in small.vector.items())
    shared = sum(1 for term in small.terms if term in large.terms)
    common = len(a.names & b.names)
    fewest = min(len(a.names), len(b.names))
    opposite = len(a.direction) == len(b.direction) == 1 and a.direction != b.direction
    return Features(cosine, common / fewest if fewest else 0.0, shared, opposite)


def _doc(article: Article) -> _Doc:
    body = plain_text(article.body_html[:BODY_CHARS]) if article.body_html else ""
    body = " ".join(body.split()[:BODY_WORDS])
    text = f"{article.title} {article.title} {article.summary} {body}"  # the title counts twice
    return _Doc(
        url=canonical_url(article.url) if article.url else "",
        terms=Counter(stems(text)),
        names=frozenset(names(f"{article.title} {article.summary} {body}")),
        at=article.published_at.timestamp(),
        vector={},
        direction=frozenset(_DIRECTION[w] for w in stems(article.title) if w in _DIRECTION),
    )


def _weigh(docs: list[_Doc]) -> None:
    """TF-IDF vectors of unit length, IDF over `docs` (smoothed so two documents still work)."""
    df: Counter[str] = Counter()
    for d in docs:
        df.update(d.terms.keys())
    n = len(docs)
    idf = {term: 1 + math.log((n + 1) / (count + 1)) for term, count in df.items()}
    for d in docs:
        weights = {
            term: (1 + math.log(count) if count > 1 else 1.0) * idf[term]
            for term, count in d.terms.items()
        }
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        d.vector = {term: w / norm for term, w in weights.items()}


_TRACKING = frozenset({"fbclid", "gclid", "mc_cid", "mc_eid", "ref", "cmpid"})


def canonical_url(url: str) -> str:
    """The URL without scheme, www., fragment, tracking parameters or a trailing slash."""
    parts = urlsplit(url.strip())
    host = parts.netloc.lower().removeprefix("www.")
    kept = (
        (k, v) for k, v in parse_qsl(parts.query) if not (k.startswith("utm_") or k in _TRACKING)
    )
    query = urlencode(sorted(kept))
    return f"{host}{parts.path.rstrip('/')}" + (f"?{query}" if query else "")
