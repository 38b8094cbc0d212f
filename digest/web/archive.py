"""`/archive/…`: past editions as web pages (the "view in browser" target) and an Atom feed.

Each digest's `archive` setting decides: `public` lists its editions and publishes the
feed; `unlisted` serves edition pages only to those who have the link (and asks search
engines not to index them); `off` serves nothing. An edition is published once one of its
deliveries was sent; pages carry no personal link.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from flask import Blueprint, Response, abort, render_template

from digest.config import Config, Digest
from digest.editions import Edition
from digest.render import compile_template, render_email
from digest.render.view import (
    ARCHIVE_PATH,
    date_range,
    edition_path,
    edition_url,
    last_day,
    subject_for,
)
from digest.web.context import web

bp = Blueprint("archive", __name__)
ATOM = "http://www.w3.org/2005/Atom"
FEED_NAME = "feed.atom"


@dataclass(frozen=True)
class Listed:
    href: str
    title: str
    date_range: str
    count: int
    published: datetime
    edition: Edition


@dataclass(frozen=True)
class DigestArchive:
    key: str
    name: str
    href: str
    feed: str
    editions: tuple[Listed, ...]


def digest_archive(config: Config, digest: Digest) -> DigestArchive:
    store = web().store
    listed = tuple(
        Listed(
            href=edition_path(e),
            title=subject_for(config, e),
            date_range=date_range(e.start.date(), last_day(e)),
            count=len(e.items),
            published=sent,
            edition=e,
        )
        for e, sent in store.editions.published(digest.key)
    )
    base = f"{ARCHIVE_PATH}/{digest.key}/"
    return DigestArchive(digest.key, digest.name, base, base + FEED_NAME, listed)


def _digest(key: str, *allowed: str) -> Digest:
    for d in web().config.digests:
        if d.key == key and d.archive in allowed:
            return d
    abort(404)


@bp.get(f"{ARCHIVE_PATH}/")
def index() -> str:
    config = web().config
    digests = [digest_archive(config, d) for d in config.digests if d.archive == "public"]
    return render_template("archive.html", digests=digests)


@bp.get(f"{ARCHIVE_PATH}/<digest>/")
def digest_index(digest: str) -> str:
    config = web().config
    return render_template(
        "archive_digest.html",
        d=digest_archive(config, _digest(digest, "public")),
        archive_href=f"{ARCHIVE_PATH}/",
    )


@bp.get(f"{ARCHIVE_PATH}/<digest>/{FEED_NAME}")
def feed(digest: str) -> Response:
    config = web().config
    xml = atom_feed(config, digest_archive(config, _digest(digest, "public")))
    return Response(xml, mimetype="application/atom+xml")


@bp.get(f"{ARCHIVE_PATH}/<digest>/<period>/")
@bp.get(f"{ARCHIVE_PATH}/<digest>/<period>/<mix>/")
def edition_page(digest: str, period: str, mix: str = "") -> Response:
    ctx = web()
    spec = _digest(digest, "public", "unlisted")
    found = [e for e, _ in ctx.store.editions.published(spec.key, period)]
    if not found:
        abort(404)
    edition = found[0]
    topics = mix.split("+") if mix else edition.topics()
    # One address per page: a mix must be the edition's own topics, in section order.
    if not topics or edition_path(edition, topics) != edition_path(edition) + (
        f"{mix}/" if mix else ""
    ):
        abort(404)
    compiled = compile_template(ctx.config.resolve(ctx.config.templates_dir), spec.template)
    page = render_email(compiled, ctx.config, edition, topics, web=True)
    response = Response(page.html, mimetype="text/html")
    if spec.archive == "unlisted":
        response.headers["X-Robots-Tag"] = "noindex"
    return response


def atom_feed(config: Config, archive: DigestArchive) -> bytes:
    """An Atom 1.0 feed of the digest's published editions, newest first."""
    ET.register_namespace("", ATOM)

    def add(parent: ET.Element, tag: str, text: str = "", **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text:
            element.text = text
        return element

    base = config.site.base_url
    root = ET.Element(f"{{{ATOM}}}feed")
    add(root, "id", base + archive.href)
    add(root, "title", f"{config.site.name}: {archive.name}")
    add(root, "link", rel="self", href=base + archive.feed)
    add(root, "link", rel="alternate", type="text/html", href=base + archive.href)
    newest = archive.editions[0].published if archive.editions else None
    add(root, "updated", (newest or datetime(1970, 1, 1, tzinfo=UTC)).isoformat())
    author = add(root, "author")
    add(author, "name", config.site.name)
    for e in archive.editions:
        entry = add(root, "entry")
        url = edition_url(config, e.edition)
        add(entry, "id", url)
        add(entry, "title", e.title)
        add(entry, "link", rel="alternate", type="text/html", href=url)
        add(entry, "published", e.published.isoformat())
        add(entry, "updated", e.published.isoformat())
        titles = [i.article.title for i in e.edition.items]
        add(entry, "summary", f"{e.date_range}: " + " · ".join(titles))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
