"""What an ingest run reports: per source, what was stored, skipped, or why it failed."""

from __future__ import annotations

from dataclasses import dataclass, field

from digest.articles import Article


@dataclass(frozen=True)
class Skipped:
    """One entry a reader left out, with where it is (file, line or entry) and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


# A reader yields articles and, in order, the entries it had to leave out.
ReaderResult = Article | Skipped


class EntryError(ValueError):
    """One entry is unusable; the reader skips it and the rest of the source still ingests."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line  # within the entry's own file, when it has one


@dataclass(frozen=True)
class SourceReport:
    name: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: tuple[Skipped, ...] = ()
    error: str | None = None
    # Feed categories that map to no topic, with how many articles carried each.
    unmapped: tuple[tuple[str, int], ...] = ()
    articles: tuple[Article, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        """What `digest ingest --json` prints for this source."""
        return {
            "name": self.name,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": [{"where": s.where, "reason": s.reason} for s in self.skipped],
            "error": self.error,
            "unmapped_categories": dict(self.unmapped),
        }

    def unmapped_text(self) -> str:
        """'Sport (3), Crossword (1)'."""
        return ", ".join(f"{name} ({n})" for name, n in self.unmapped)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def stored(self) -> int:
        return self.added + self.updated + self.unchanged


@dataclass(frozen=True)
class IngestReport:
    sources: tuple[SourceReport, ...]

    @property
    def ok(self) -> bool:
        """True when every source could be read (skipped entries do not count as failure)."""
        return all(s.ok for s in self.sources)

    @property
    def failed(self) -> tuple[SourceReport, ...]:
        return tuple(s for s in self.sources if not s.ok)

    @property
    def added(self) -> int:
        return sum(s.added for s in self.sources)

    @property
    def updated(self) -> int:
        return sum(s.updated for s in self.sources)

    @property
    def unchanged(self) -> int:
        return sum(s.unchanged for s in self.sources)

    @property
    def skipped(self) -> int:
        return sum(len(s.skipped) for s in self.sources)
