"""What a template sees: an edition turned into sections of cards, with display strings ready.

Templates stay free of logic (no date maths, no URL building); everything they print is
prepared here, once per distinct content.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from digest.config import Config, Digest
from digest.editions import Edition, EditionItem
from digest.errors import ConfigError

UNSUBSCRIBE = "-unsubscribe_url-"
PREFERENCES = "-preferences_url-"

SUMMARY_CHARS = 480  # a card is a teaser; the article page carries the rest
PREHEADER_CHARS = 140  # what inbox list views show after the subject
PREHEADER_TITLES = 3
_AI = re.compile(r"\bAI\b", re.IGNORECASE)


@dataclass(frozen=True)
class Card:
    """One article as the email shows it."""

    id: str
    rank: int
    title: str
    url: str  # with UTM parameters
    summary: str
    thoughts: str
    topic: str
    topic_name: str
    labels: tuple[str, ...]
    read_time: str  # "4 min read"
    sources: str  # "Prism Wire · Global Desk"
    image: str | None
    ai_generated: bool


@dataclass(frozen=True)
class Section:
    key: str
    name: str
    cards: tuple[Card, ...]


def last_day(edition: Edition) -> date:
    """The last day the edition covers (its `end` is exclusive)."""
    return (edition.end - timedelta(microseconds=1)).date()


def date_range(start: date, end: date) -> str:
    """'Nov 23 – 29, 2026', 'Nov 30 – Dec 6, 2026', 'Dec 28, 2026 – Jan 3, 2027'."""
    if start.year != end.year:
        return f"{start:%b} {start.day}, {start.year} – {end:%b} {end.day}, {end.year}"
    if start.month != end.month:
        return f"{start:%b} {start.day} – {end:%b} {end.day}, {end.year}"
    if start == end:
        return f"{start:%b} {start.day}, {start.year}"
    return f"{start:%b} {start.day} – {end.day}, {end.year}"


def subject_for(config: Config, edition: Edition, pattern: str | None = None) -> str:
    """The subject from `pattern`, default the digest's `subject` (fields: site, name, start,
    end, week)."""
    digest = config.digest(edition.digest)
    fields = {
        "site": config.site.name,
        "name": digest.name,
        "start": edition.start.date(),
        "end": last_day(edition),
        "week": edition.period,
    }
    try:
        return (pattern or digest.subject).format(**fields)
    except KeyError as exc:
        reason = f"unknown field {{{exc.args[0]}}} (known: {', '.join(fields)})"
    except (ValueError, IndexError) as exc:
        reason = f"invalid pattern: {exc}"
    index = config.digests.index(digest)
    raise ConfigError(str(config.path), reason, key=f"digests[{index}].subject")


def with_utm(url: str, *, campaign: str, content: str) -> str:
    """`url` with utm_* parameters set, keeping its other query parameters as written."""
    parts = urlsplit(url)
    kept = [p for p in parts.query.split("&") if p and not p.partition("=")[0].startswith("utm_")]
    utm = urlencode(
        {
            "utm_source": "digest",
            "utm_medium": "email",
            "utm_campaign": campaign,
            "utm_content": content,
        }
    )
    return urlunsplit(parts._replace(query="&".join([*kept, utm])))


def campaign_of(digest: Digest, edition: Edition) -> str:
    return digest.utm_campaign or f"{digest.key}-{edition.period}"


ARCHIVE_PATH = "/archive"


def edition_path(edition: Edition, topics: Sequence[str] = ()) -> str:
    """`/archive/DIGEST/PERIOD/` (every section), or `…/PERIOD/a+b/` for one topic mix."""
    shown = [t for t in edition.topics() if t in set(topics)]
    mix = "" if not topics or shown == edition.topics() else "+".join(shown) + "/"
    return f"{ARCHIVE_PATH}/{edition.digest}/{edition.period}/{mix}"


def edition_url(config: Config, edition: Edition, topics: Sequence[str] = ()) -> str:
    """The edition's web page for this topic mix; empty when the digest's archive is off."""
    if config.digest(edition.digest).archive == "off":
        return ""
    return config.site.base_url + edition_path(edition, topics)


def in_sections(edition: Edition, topics: Iterable[str]) -> tuple[EditionItem, ...]:
    """The items of the chosen topics, grouped by section in edition order."""
    wanted = set(topics)
    order = [t for t in edition.topics() if t in wanted]
    return tuple(i for t in order for i in edition.items if i.topic == t)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:.-–—")
    return cut + "…"


def _labels(item: EditionItem) -> tuple[str, ...]:
    labels = tuple(item.article.labels)
    # An AI-generated article is labelled on its card even when its source set no label.
    if item.article.ai_generated and not any(_AI.search(label) for label in labels):
        labels += ("AI-generated",)
    return labels


def card(item: EditionItem, *, topic_name: str, campaign: str) -> Card:
    article = item.article
    return Card(
        id=article.id,
        rank=item.rank,
        title=" ".join(article.title.split()),
        url=with_utm(article.url, campaign=campaign, content=article.id),
        summary=_shorten(article.summary, SUMMARY_CHARS),
        thoughts=item.thoughts,
        topic=item.topic,
        topic_name=topic_name,
        labels=_labels(item),
        read_time=f"{max(1, article.read_minutes)} min read",
        sources=" · ".join(item.sources or article.sources),
        image=article.image,
        ai_generated=article.ai_generated,
    )


def _and_list(names: Sequence[str]) -> str:
    """'Politics, Technology and Economy'."""
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def preheader(items: Sequence[EditionItem]) -> str:
    """The first titles, for the inbox line under the subject."""
    titles = " · ".join(" ".join(i.article.title.split()) for i in items[:PREHEADER_TITLES])
    return _shorten(titles, PREHEADER_CHARS)


def context(
    config: Config,
    edition: Edition,
    items: Sequence[EditionItem],
    subject: str,
    preheader_text: str | None = None,
    *,
    web: bool = False,
) -> dict[str, Any]:
    """Every name a template may use (see templates.CONTEXT_NAMES); `preheader_text`
    replaces the first titles (an A/B variant's preheader).

    `web=True` is the edition's web page: no personal link and no "view in browser" link;
    the template shows a subscribe link where an email has its unsubscribe links.
    """
    digest = config.digest(edition.digest)
    names = {t.key: t.name for t in config.topics}
    campaign = campaign_of(digest, edition)
    sections: list[Section] = []
    for item in items:
        name = names.get(item.topic, item.topic.replace("-", " ").title())
        if not sections or sections[-1].key != item.topic:
            sections.append(Section(key=item.topic, name=name, cards=()))
        last = sections[-1]
        new = card(item, topic_name=name, campaign=campaign)
        sections[-1] = Section(key=last.key, name=last.name, cards=(*last.cards, new))
    return {
        "site": config.site,
        "digest": digest,
        "subject": subject,
        "preheader": preheader_text or preheader(items),
        "date_range": date_range(edition.start.date(), last_day(edition)),
        "intro": tuple(p for p in edition.intro.split("\n\n") if p.strip()),
        "sections": sections,
        "article_count": len(items),
        "topic_names": [s.name for s in sections],
        "topic_list": _and_list([s.name for s in sections]),
        "ai_generated": any(i.article.ai_generated for i in items),
        "unsubscribe_url": "" if web else UNSUBSCRIBE,
        "preferences_url": "" if web else PREFERENCES,
        "web_url": "" if web else edition_url(config, edition, [s.key for s in sections]),
        "subscribe_url": f"{config.site.base_url}/subscribe",
    }
