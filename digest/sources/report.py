"""What an ingest run reports: per source, what was stored, skipped, or why it failed."""

from __future__ import annotations

from dataclasses import dataclass

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
