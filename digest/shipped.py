"""Files that ship inside the package: the default templates and the `digest init` project.

They are read through importlib.resources, so they work from a wheel as well as from a
checkout. A project's own templates folder overrides the shipped templates file by file:
`templates/weekly.mjml` in the project wins over digest's, and every file the project
does not have comes from digest.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

TEMPLATES = "templates"  # folder inside the package, laid out like a project's templates/


def shipped(*parts: str) -> Traversable:
    """A file or folder inside the installed package, e.g. shipped("templates", "web")."""
    node = files("digest")
    for part in parts:
        node = node / part
    return node


def find_template(templates_dir: Path, name: str) -> Path | Traversable | None:
    """`name` (e.g. "weekly.mjml" or "web/base.html") from the project's templates folder,
    else the copy digest ships; None when neither has it."""
    own = templates_dir / name
    if own.is_file():
        return own
    default = shipped(TEMPLATES, *name.split("/"))
    return default if default.is_file() else None


def shipped_template_names() -> list[str]:
    """Names of the email templates digest ships (NAME for NAME.mjml + NAME.txt)."""
    folder = shipped(TEMPLATES)
    return sorted(p.name[: -len(".mjml")] for p in folder.iterdir() if p.name.endswith(".mjml"))
