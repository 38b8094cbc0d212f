"""Choose the near-duplicate thresholds on the corpus's "tune" split:
`python bench/duplicates.py` (add `--holdout` to report the held-out split with the
thresholds in digest/duplicates.py). The search never reads the holdout split.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from duplicate_corpus import evaluate  # noqa: E402

from digest.duplicates import CHOSEN, Thresholds  # noqa: E402


def search() -> list[tuple[float, Thresholds]]:
    """Every grid point by F0.5 on the tune split (precision counts double: a false merge
    hides a story, a missed one only repeats it)."""
    grid = []
    for sure, likely, names in itertools.product(
        [x / 100 for x in range(20, 91, 2)],
        [x / 100 for x in range(8, 41, 2)],
        [x / 10 for x in range(2, 9)],
    ):
        if likely > sure:
            continue
        t = Thresholds(sure, likely, names)
        s = evaluate("tune", t)
        beta2 = 0.25
        f = (1 + beta2) * s.precision * s.recall / (beta2 * s.precision + s.recall or 1)
        grid.append((f, t))
    grid.sort(key=lambda ft: (-ft[0], -ft[1].cosine_sure, -ft[1].cosine_likely))
    return grid


def centre(grid: list[tuple[float, Thresholds]]) -> Thresholds:
    """Of the grid points that tie for best, the one nearest their centre: the widest margin."""
    best = [t for f, t in grid if f == grid[0][0]]
    mean = [sum(getattr(t, k) for t in best) / len(best) for k in Thresholds.__annotations__]

    def distance(t: Thresholds) -> float:
        names = Thresholds.__annotations__
        return sum((getattr(t, k) - m) ** 2 for k, m in zip(names, mean, strict=True))

    return min(best, key=distance)


def main() -> None:
    grid = search()
    print("best on the tune split (F0.5, thresholds):")
    for f, t in grid[:5]:
        print(f"  {f:.3f}  {t}  tune: {evaluate('tune', t)}")
    ties = sum(1 for f, _ in grid if f == grid[0][0])
    print(f"{ties} points tie for best; the one nearest their centre: {centre(grid)}")
    tune = evaluate("tune", CHOSEN)
    print(f"chosen: {CHOSEN}")
    print(f"  tune:    {tune}")
    for p in tune.missed:
        print(f"    missed: {p.a.title!r} / {p.b.title!r}")
    for p in tune.merged:
        print(f"    merged: {p.a.title!r} / {p.b.title!r}")
    if "--holdout" in sys.argv:
        print(f"  holdout: {evaluate('holdout', CHOSEN)}")


if __name__ == "__main__":
    main()
