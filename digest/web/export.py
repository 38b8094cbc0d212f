"""`digest export-archive DIR`: the archive pages and feeds as static files, for any web host.

The files are the pages `digest serve` answers, fetched from the same app in-process, so
the two never differ. Everything is rendered before the first file is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from digest.config import Config
from digest.errors import DigestError, UsageError
from digest.render.view import ARCHIVE_PATH, edition_path
from digest.store import Store
from digest.transports.base import Transport
from digest.web.archive import FEED_NAME


@dataclass(frozen=True)
class Exported:
    folder: Path
    pages: int  # HTML pages written
    feeds: int
    editions: int


def archive_urls(config: Config, store: Store) -> tuple[list[str], int]:
    """Every archive URL path `digest serve` answers for `config`, and the number of editions."""
    urls = [f"{ARCHIVE_PATH}/"]
    editions = 0
    for digest in config.digests:
        if digest.archive == "off":
            continue
        if digest.archive == "public":
            urls += [f"{ARCHIVE_PATH}/{digest.key}/", f"{ARCHIVE_PATH}/{digest.key}/{FEED_NAME}"]
        for edition, _sent in store.editions.published(digest.key):
            editions += 1
            paths = {edition_path(edition)}
            paths.update(
                edition_path(edition, mix) for mix in store.editions.topic_mixes(edition.key)
            )
            urls += sorted(paths)
    return urls, editions


def export_archive(config: Config, store: Store, folder: Path) -> Exported:
    """Write the archive under `folder` (`index.html` per page, `feed.atom` per digest)."""
    from digest.web import create_app

    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a folder")

    def no_mail(kind: str) -> Transport:  # the archive sends nothing
        raise DigestError(f"export-archive sends no {kind} mail")

    app = create_app(config, store, secret="archive-export-signs-nothing", transport=no_mail)
    client = app.test_client()
    urls, editions = archive_urls(config, store)
    files: dict[Path, bytes] = {}
    for url in urls:
        answer = client.get(url)
        if answer.status_code != 200:
            raise DigestError(f"export-archive: {url} answered {answer.status_code}")
        relative = url.removeprefix(f"{ARCHIVE_PATH}/")
        target = folder / relative / "index.html" if url.endswith("/") else folder / relative
        files[target] = answer.get_data()
    for target, data in files.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    feeds = sum(1 for t in files if t.name == FEED_NAME)
    return Exported(folder, len(files) - feeds, feeds, editions)
