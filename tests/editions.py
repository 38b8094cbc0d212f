"""Sample Articles and Editions for tests: deterministic, realistic, and cheap to build.

    from editions import make_article, make_edition
    edition = make_edition(n_per_topic=3, topics=("politics", "tech"), ai=True)

Every value is derived from the arguments, so two calls with the same arguments build
equal objects. Topic keys match the sample digest.yaml.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from digest.articles import Article, article_id
from digest.editions import Edition, EditionItem

TOPICS = ("politics", "tech", "economy", "climate", "culture", "health")
LONDON = ZoneInfo("Europe/London")

_HEADLINES = {
    "politics": [
        "South Korea and Japan Resume Naval Drills After 9 Years",
        "Coalition Talks Stall Over Budget Rules",
        "Regional Leaders Sign Water-Sharing Accord",
        "Parliament Votes to Review Election Funding Limits",
    ],
    "tech": [
        "Open-Source Model Matches Rivals at a Tenth of the Cost",
        "Chipmakers Race to Build Factories Closer to Home",
        "City Pilots Driverless Buses on Night Routes",
        "Encrypted Messaging Adds Usernames Instead of Numbers",
    ],
    "economy": [
        "Central Bank Holds Rates as Inflation Cools",
        "Shipping Costs Ease After a Year of Disruption",
        "Four-Day Week Trial Reports Steady Output",
        "Small Exporters Turn to Regional Trade Deals",
    ],
    "climate": [
        "Heat Pumps Outsell Gas Boilers for the First Time",
        "Coastal Towns Weigh Managed Retreat",
        "Grid Batteries Smooth a Windless Week",
        "Glacier Survey Finds Faster Summer Melt",
    ],
    "culture": [
        "A Forgotten Novelist Finds New Readers",
        "Small Cinemas Bet on Repertory Nights",
        "Street Choirs Spread Across the Old Port",
        "Museum Returns Carved Doors to Their Village",
    ],
    "health": [
        "New Guidance on Screen Time for Teenagers",
        "Walking Clubs Cut Loneliness Among Retirees",
        "Hospitals Trial Evening Clinics to Cut Waiting Lists",
        "What the Latest Sleep Studies Actually Show",
    ],
}

_SUMMARY = (
    "{title}. Officials and analysts say the change reflects pressures that have been "
    "building for months, and that the next few weeks will show whether it holds. "
    "Critics warn the details are still vague; supporters say the direction is clear."
)

_THOUGHTS = (
    "Which side of this story do you think is missing from the coverage?",
    "What would change your mind about this?",
    "Who gains and who loses if this holds for a year?",
    "How does this show up in your own budget or work?",
)

_SOURCES = (("Prism Wire",), ("Global Desk",), ("Prism Wire", "Global Desk"), ("Daily Briefing",))


def week_bounds(period: str = "2026-W48", tz: ZoneInfo = LONDON) -> tuple[datetime, datetime]:
    """Monday 00:00 and the next Monday 00:00 of an ISO week, in `tz`."""
    year, week = period.split("-W")
    monday = datetime.fromisocalendar(int(year), int(week), 1).replace(tzinfo=tz)
    return monday, monday + timedelta(days=7)


def headline(topic: str, n: int) -> str:
    """The n-th (0-based) sample headline of a topic; numbered once the list runs out."""
    titles = _HEADLINES.get(topic) or [f"{topic.title()} story"]
    title = titles[n % len(titles)]
    return title if n < len(titles) else f"{title} ({n + 1})"


def make_article(
    topic: str = "politics",
    n: int = 0,
    *,
    title: str | None = None,
    url: str | None = None,
    ai: bool = False,
    labels: Sequence[str] | None = None,
    summary: str | None = None,
    read_minutes: int | None = None,
    sources: Sequence[str] | None = None,
    image: str | None = None,
    published_at: datetime | None = None,
) -> Article:
    """One article; `n` varies the headline, sources and publication time."""
    title = title or headline(topic, n)
    url = url or f"https://news.example.com/{topic}/{n + 1}"
    start, _ = week_bounds()
    return Article(
        id=article_id(url),
        url=url,
        title=title,
        published_at=published_at or (start + timedelta(hours=9 + 7 * n)).astimezone(UTC),
        topics=(topic,),
        labels=tuple(labels) if labels is not None else (("AI Analysis",) if ai else ()),
        summary=summary if summary is not None else _SUMMARY.format(title=title),
        body_html=f"<p>{title}</p>",
        read_minutes=read_minutes if read_minutes is not None else 3 + n % 4,
        sources=tuple(sources) if sources is not None else _SOURCES[n % len(_SOURCES)],
        image=image,
        ai_generated=ai,
    )


def make_item(
    article: Article, *, rank: int, topic: str | None = None, thoughts: str | None = None
) -> EditionItem:
    """The card of `article` in its first topic's section."""
    topic = topic or article.topics[0]
    return EditionItem(
        article=article,
        topic=topic,
        rank=rank,
        reason="most recent",
        thoughts=thoughts if thoughts is not None else _THOUGHTS[rank % len(_THOUGHTS)],
        sources=article.sources,
    )


def make_edition(
    n_per_topic: int = 3,
    topics: Sequence[str] = ("politics", "tech", "economy"),
    *,
    ai: bool | Sequence[bool] = False,
    digest: str = "weekly",
    period: str = "2026-W48",
    tz: ZoneInfo = LONDON,
    summary: str | None = None,
    status: str = "draft",
) -> Edition:
    """An edition with `n_per_topic` articles in each of `topics`, sections in that order.

    `ai=True` flags every article AI-generated (with an "AI Analysis" label); a sequence of
    booleans flags article i of each topic by position. Ranks interleave topics the way
    selection does (the best of each topic first), so dropping the lowest ranks trims
    every section evenly.
    """
    start, end = week_bounds(period, tz)
    items: list[EditionItem] = []
    for t_index, topic in enumerate(topics):
        for n in range(n_per_topic):
            flag = ai if isinstance(ai, bool) else bool(ai[n % len(ai)]) if ai else False
            article = make_article(topic, n, ai=flag, summary=summary)
            items.append(make_item(article, rank=n * len(topics) + t_index + 1))
    return Edition(
        digest=digest,
        period=period,
        start=start,
        end=end,
        created_at=end.astimezone(UTC) - timedelta(days=1),
        items=tuple(items),
        status=status,
    )


def sixty_article_edition() -> Edition:
    """Ten long-summary articles in each of six topics: well past Gmail's clipping size."""
    return make_edition(n_per_topic=10, topics=TOPICS, ai=(True, False), summary=_LONG_SUMMARY)


_LONG_SUMMARY = " ".join(
    [
        "Nine years is a long time in geopolitics. The last joint exercise took place in 2017,",
        "and relations have since been frozen over historical disputes, trade rows and",
        "diplomatic spats. This week both ministers agreed to resume the drills, citing a",
        "more complex threat environment and pressure from allies to share the load.",
    ]
)
