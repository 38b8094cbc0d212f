"""Build time of a week's edition as the number of articles grows, against all-pairs duplicates.

Generates N distinct articles in one ISO week (six topics, a body paragraph each, words
drawn from a large Zipf-like vocabulary the way news text is), stores them in a temp
SQLite file, then times `select_edition` (load the week, rank, find near-duplicates,
place, choose prompts, store). The reference compares every pair of articles with the
same similarity instead of using the index; it runs at the small sizes only, since its
time grows with the square.

    python bench/selection.py                       # 1,000 / 2,000 / 5,000 / 10,000
    python bench/selection.py --sizes 1000 5000
"""

from __future__ import annotations

import sys

# This file's name would shadow the standard library's `select` module: put the repository,
# not bench/, first on the path before anything imports it.
sys.path[0] = str(__import__("pathlib").Path(__file__).resolve().parent.parent)

import argparse  # noqa: E402
import itertools  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

from digest import duplicates  # noqa: E402
from digest.articles import Article  # noqa: E402
from digest.config import load_config  # noqa: E402
from digest.select import select_edition  # noqa: E402
from digest.store import open_store  # noqa: E402

TOPICS = ("politics", "tech", "economy", "climate", "culture", "health")
MONDAY = datetime(2026, 11, 23, tzinfo=UTC)
REFERENCE_UP_TO = 2000


def articles(n: int, seed: int = 1) -> list[Article]:
    rng = random.Random(seed)
    vocabulary = [
        f"{rng.choice('bcdfgklmnprst')}{rng.choice('aeiou')}{i:05d}" for i in range(30000)
    ]
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(vocabulary))))
    people = [f"Name{i}" for i in range(4000)]

    def words(k: int) -> str:
        return " ".join(rng.choices(vocabulary, cum_weights=cumulative, k=k))

    out = []
    for i in range(n):
        who = " and ".join(rng.sample(people, 2))
        out.append(
            Article(
                id=f"bench-{i:06d}",
                url=f"https://news{i % 40}.example.com/{i}",
                title=f"{who} {words(6)}",
                summary=f"{words(25)} said {who} on {words(8)}.",
                body_html=f"<p>{words(60)}. {who} {words(40)}.</p>",
                published_at=MONDAY + timedelta(seconds=rng.randrange(7 * 86400)),
                topics=(rng.choice(TOPICS),),
                sources=(f"Source {i % 40}",),
            )
        )
    return out


def build_seconds(n: int, workdir: Path) -> tuple[float, int]:
    config = load_config(ROOT / "digest.yaml")
    store = open_store(f"sqlite:///{workdir / f'bench-{n}.db'}")
    store.articles.upsert(articles(n), now=MONDAY)
    start = time.perf_counter()
    edition = select_edition(config, store, "weekly", "2026-W48", now=MONDAY + timedelta(days=7))
    seconds = time.perf_counter() - start
    store.close()
    return seconds, len(edition.items)


def all_pairs_seconds(n: int) -> tuple[float, int]:
    """The reference: the same similarity on every pair of the week's articles."""
    week = articles(n)
    start = time.perf_counter()
    docs = [duplicates._doc(a) for a in week]
    duplicates._weigh(docs)
    pairs = (
        (i, j, duplicates.features(docs[i], docs[j]))
        for i in range(len(docs))
        for j in range(i + 1, len(docs))
    )
    stories = duplicates.join(week, pairs)
    return time.perf_counter() - start, len(stories)


def indexed_seconds(n: int) -> tuple[float, int]:
    week = articles(n)
    start = time.perf_counter()
    stories = duplicates.group(week)
    return time.perf_counter() - start, len(stories)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    args = parser.parse_args()
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'articles':>9} {'build s':>8} {'cards':>6} {'dedup s':>8} {'stories':>8} "
        f"{'all-pairs s':>12}"
    )
    first: tuple[int, float] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            build, cards = build_seconds(n, Path(tmp))
            dedup, stories = indexed_seconds(n)
            ref = f"{all_pairs_seconds(n)[0]:12.2f}" if n <= REFERENCE_UP_TO else f"{'-':>12}"
            print(f"{n:>9} {build:8.2f} {cards:>6} {dedup:8.2f} {stories:>8} {ref}")
            if first is None:
                first = (n, build)
            else:
                size_ratio, time_ratio = n / first[0], build / first[1]
                print(
                    f"{'':>9} x{time_ratio:.1f} build time for x{size_ratio:.0f} articles "
                    f"(quadratic: x{size_ratio**2:.0f})"
                )


if __name__ == "__main__":
    main()
