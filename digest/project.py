"""`digest init`: a new project that works as it is, to edit from there.

The files come from the package (digest/scaffold and the shipped templates), so a wheel
can start a project anywhere. The sample articles are dated inside the current ISO week,
so the printed commands build and send this week's edition straight away.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template
from zoneinfo import ZoneInfo

from digest.errors import UsageError
from digest.shipped import TEMPLATES, shipped
from digest.weeks import current_week

SCAFFOLD = "scaffold"
DIGEST = "weekly"  # the digest the scaffold's digest.yaml defines


@dataclass(frozen=True)
class NewProject:
    root: Path
    files: tuple[Path, ...]  # every file written, relative to root
    week: str  # the ISO week the sample articles fall in
    commands: tuple[str, ...]  # what to run next, in order, from the project folder


def init_project(root: Path, *, now: datetime) -> NewProject:
    """Write a working project into `root` (created if missing; it must hold none of the
    files). Nothing is written when any of them exists already."""
    if now.tzinfo is None:
        raise ValueError("init_project needs an aware datetime")
    files = _collect(shipped(SCAFFOLD), Path()) + [
        (Path(TEMPLATES) / rel, src) for rel, src in _collect(shipped(TEMPLATES), Path())
    ]
    clashes = [rel for rel, _ in files if (root / rel).exists()]
    if clashes:
        raise UsageError(
            f"{root}: {clashes[0]} already exists; nothing was written",
            hint="run `digest init` in a new or empty folder",
        )
    week = current_week(now, ZoneInfo("UTC"))  # the scaffold's site.timezone
    dates = _article_dates(week.start, now.astimezone(UTC))
    for rel, src in files:
        text = src.read_text(encoding="utf-8")
        if rel.parts[0] == "articles":
            text = Template(text).substitute(dates)
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    cd = [] if root.resolve() == Path.cwd().resolve() else [f"cd {_quoted(str(root))}"]
    commands = (
        *cd,
        f"export DIGEST_SECRET={secrets.token_urlsafe(24)}",
        "digest ingest",
        "digest subscribers import subscribers/",
        f"digest build {DIGEST} --week {week.label}",
        f"digest send {DIGEST} --week {week.label} --transport outbox",
        "digest serve",
    )
    return NewProject(
        root=root, files=tuple(rel for rel, _ in files), week=week.label, commands=commands
    )


def _collect(folder: Traversable, prefix: Path) -> list[tuple[Path, Traversable]]:
    """Every file under `folder`, with its path relative to it, in name order."""
    found: list[tuple[Path, Traversable]] = []
    for item in sorted(folder.iterdir(), key=lambda t: t.name):
        if item.name.startswith(("_", ".")):
            continue  # __init__.py, __pycache__
        if item.is_dir():
            found.extend(_collect(item, prefix / item.name))
        else:
            found.append((prefix / item.name, item))
    return found


def _article_dates(start: datetime, now: datetime) -> dict[str, str]:
    """Four instants spread between the start of the week and now, oldest first."""
    span = now - start
    return {
        f"day{i}": (start + span * i / 5).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        for i in range(1, 5)
    }


def _quoted(path: str) -> str:
    safe = all(c.isalnum() or c in "/._-~" for c in path)
    return path if safe else "'" + path.replace("'", "'\\''") + "'"
