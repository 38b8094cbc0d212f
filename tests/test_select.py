"""Selecting a week's edition: the week window, topics and quotas, ranking, near-duplicates,
no repeats across editions, rebuilding, and the editor's pin/drop/move/approve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert

from digest.articles import Article
from digest.config import Config
from digest.editing import adjust_edition, approve, drop, move, pin
from digest.editions import Edition
from digest.errors import NotFoundError, UsageError
from digest.select import select_edition
from digest.store import Store
from digest.store.schema import deliveries
from digest.weeks import current_week, parse_week

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
W48 = datetime(2026, 11, 23, tzinfo=UTC)  # Monday 00:00 in London (GMT in November)


def art(
    id: str,
    *,
    topics: tuple[str, ...] = ("politics",),
    at: datetime = W48 + timedelta(days=2),
    title: str | None = None,
    summary: str = "",
    sources: tuple[str, ...] = ("Prism Wire",),
    url: str | None = None,
    **more: object,
) -> Article:
    return Article(
        id=id,
        url=url or f"https://news.example.com/{id}",
        title=title or f"Story {id}",
        summary=summary,
        published_at=at,
        topics=topics,
        sources=sources,
        **more,  # type: ignore[arg-type]
    )


def build(config: Config, store: Store, *articles: Article, week: str = "2026-W48") -> Edition:
    store.articles.upsert(articles, now=NOW)
    return select_edition(config, store, "weekly", week, now=NOW)


def with_digest(config: Config, **changes: object) -> Config:
    digest = config.digests[0].model_copy(update=changes)
    return config.model_copy(update={"digests": [digest]})


# -- weeks -----------------------------------------------------------------------------


def test_week_runs_monday_to_monday_in_the_digest_time_zone() -> None:
    week = parse_week("2026-W48", LONDON)
    assert (week.start, week.end) == (W48, W48 + timedelta(days=7))
    assert week.start.tzinfo == LONDON and week.label == "2026-W48"


def test_week_with_the_spring_clock_change_is_an_hour_short() -> None:
    week = parse_week("2026-W13", LONDON)  # clocks go forward on Sunday 29 March
    assert week.start.astimezone(UTC) == datetime(2026, 3, 23, 0, tzinfo=UTC)
    assert week.end.astimezone(UTC) == datetime(2026, 3, 29, 23, tzinfo=UTC)
    assert week.end.astimezone(UTC) - week.start.astimezone(UTC) == timedelta(hours=167)


def test_week_with_the_autumn_clock_change_is_an_hour_long() -> None:
    week = parse_week("2026-W43", LONDON)  # clocks go back on Sunday 25 October
    assert week.start.astimezone(UTC) == datetime(2026, 10, 18, 23, tzinfo=UTC)
    assert week.end.astimezone(UTC) - week.start.astimezone(UTC) == timedelta(hours=169)


def test_weeks_across_the_year_boundary() -> None:
    w53 = parse_week("2026-W53", LONDON)  # 2026 starts on a Thursday, so it has 53 weeks
    assert w53.start.date().isoformat() == "2026-12-28"
    assert w53.end.date().isoformat() == "2027-01-04"
    assert parse_week("2027-W01", LONDON).start == w53.end
    with pytest.raises(UsageError) as err:
        parse_week("2027-W53", LONDON)
    assert str(err.value) == "week '2027-W53': 2027 has weeks 01 to 52"
    assert err.value.hint == "e.g. --week 2027-W52"


@pytest.mark.parametrize("bad", ["2026-48", "W48", "2026-W5", "2026-W00", "next week"])
def test_a_bad_week_names_the_value_and_gives_an_example(bad: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_week(bad, LONDON)
    assert repr(bad) in str(err.value)
    assert "2026-W05" in str(err.value) or "weeks 01 to" in str(err.value)


def test_current_week_is_the_local_week() -> None:
    late_sunday = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)
    assert current_week(late_sunday, LONDON).label == "2026-W48"
    assert current_week(late_sunday, ZoneInfo("Pacific/Auckland")).label == "2026-W49"
    assert current_week(datetime(2027, 1, 2, tzinfo=UTC), LONDON).label == "2026-W53"


# -- selection ---------------------------------------------------------------------------


def test_only_articles_published_in_the_week_are_selected(config: Config, store: Store) -> None:
    edition = build(
        config,
        store,
        art("before", at=W48 - timedelta(seconds=1)),
        art("first", at=W48),
        art("last", at=W48 + timedelta(days=7, seconds=-1)),
        art("after", at=W48 + timedelta(days=7)),
    )
    assert {i.article.id for i in edition.items} == {"first", "last"}
    assert edition.key == "weekly/2026-W48" and edition.status == "draft"


def test_sections_follow_digest_order_and_ranks_run_over_the_edition(
    config: Config, store: Store
) -> None:
    edition = build(
        config,
        store,
        art("t1", topics=("tech",), at=W48 + timedelta(days=6)),
        art("p1", topics=("politics",), at=W48 + timedelta(days=1)),
        art("h1", topics=("health",), at=W48 + timedelta(days=5)),
        art("x1", topics=("sports",)),
    )
    assert [(i.rank, i.topic, i.article.id) for i in edition.items] == [
        (1, "politics", "p1"),
        (2, "tech", "t1"),
        (3, "health", "h1"),
    ]
    assert "left out 1 article outside this digest's topics" in edition.notes


def test_ranking_is_pinned_then_priority_then_recency(config: Config, store: Store) -> None:
    edition = build(
        with_digest(config, per_topic=5),
        store,
        art("newest", at=W48 + timedelta(days=6)),
        art("older", at=W48 + timedelta(days=3)),
        art("priority", at=W48 + timedelta(days=1), priority=2),
        art("pinned", at=W48, pinned=True),
    )
    assert [(i.article.id, i.reason) for i in edition.items] == [
        ("pinned", "pinned"),
        ("priority", "editor priority 2"),
        ("newest", "most recent in Politics"),
        ("older", "2nd most recent in Politics"),
    ]


def test_per_topic_quota_keeps_the_best_ranked(config: Config, store: Store) -> None:
    politics = [art(f"p{d}", at=W48 + timedelta(days=d)) for d in range(5)]
    edition = build(config, store, *politics)
    assert [i.article.id for i in edition.items] == ["p4", "p3", "p2"]
    assert "quota: cut 2 articles from Politics (per_topic 3)" in edition.notes


def test_max_articles_cuts_the_lowest_ranked(config: Config, store: Store) -> None:
    small = with_digest(config, max_articles=3)
    edition = build(
        small,
        store,
        art("p-old", at=W48 + timedelta(days=2)),
        art("p-new", at=W48 + timedelta(days=5)),
        art("t-new", topics=("tech",), at=W48 + timedelta(days=4)),
        art("t-old", topics=("tech",), at=W48 + timedelta(hours=1), title="Oldest tech"),
    )
    assert [i.article.id for i in edition.items] == ["p-new", "p-old", "t-new"]
    assert [i.rank for i in edition.items] == [1, 2, 3]
    assert "max_articles 3: cut 1 article ('Oldest tech')" in edition.notes


def test_an_article_in_several_topics_sits_in_the_first_with_room(
    config: Config, store: Store
) -> None:
    one = with_digest(config, per_topic=1)
    edition = build(
        one,
        store,
        art("both-new", topics=("tech", "politics"), at=W48 + timedelta(days=5)),
        art("both-old", topics=("tech", "politics"), at=W48 + timedelta(days=1)),
        art("tech-only", topics=("tech",), at=W48),
    )
    placed = {i.article.id: (i.topic, i.reason) for i in edition.items}
    assert placed == {
        "both-new": ("politics", "most recent in Politics"),
        "both-old": ("tech", "most recent in Technology (Politics was full)"),
    }
    assert "quota: cut 1 article from Technology (per_topic 1)" in edition.notes


# -- near-duplicates ------------------------------------------------------------------------

KOREA_A = (
    "South Korea and Japan resume naval drills after nine years",
    "South Korea and Japan agree to resume joint naval search and rescue exercises after a "
    "9-year hiatus, signaling a pragmatic shift in military cooperation amid rising North "
    "Korean threats.",
)
KOREA_B = (
    "Seoul and Tokyo restart joint naval rescue exercises after 9-year pause",
    "Defense ministers of South Korea and Japan agreed in Yokosuka to restart joint search and "
    "rescue exercises between their navies, the first since 2017, as North Korean missile "
    "threats grow.",
)


def test_duplicates_merge_into_one_card_naming_every_source(config: Config, store: Store) -> None:
    edition = build(
        config,
        store,
        art("wire", title=KOREA_A[0], summary=KOREA_A[1], at=W48 + timedelta(days=3)),
        art(
            "desk",
            title=KOREA_B[0],
            summary=KOREA_B[1],
            at=W48 + timedelta(days=2),
            sources=("Global Desk",),
        ),
    )
    (item,) = edition.items
    assert item.article.id == "wire"
    assert item.sources == ("Prism Wire", "Global Desk")
    assert item.article.extra["merged_ids"] == ["desk"]
    assert item.reason == "most recent in Politics + merged 1 duplicate from Global Desk"
    assert f"merged {KOREA_B[0]!r} (Global Desk) into {KOREA_A[0]!r}" in edition.notes


def test_the_merged_card_keeps_the_best_ranked_article(config: Config, store: Store) -> None:
    edition = build(
        config,
        store,
        art("wire", title=KOREA_A[0], summary=KOREA_A[1], at=W48 + timedelta(days=3)),
        art("desk", title=KOREA_B[0], summary=KOREA_B[1], sources=("Global Desk",), priority=1),
    )
    (item,) = edition.items
    assert item.article.id == "desk" and item.sources == ("Global Desk", "Prism Wire")


# -- never twice, and rebuilding ----------------------------------------------------------------


def test_an_article_carried_last_week_is_not_carried_again(config: Config, store: Store) -> None:
    sunday = W48 - timedelta(hours=2)
    w47 = build(
        config,
        store,
        art("spans", at=sunday),
        art("dup", title=KOREA_A[0], summary=KOREA_A[1], at=sunday),
        art("dup2", title=KOREA_B[0], summary=KOREA_B[1], at=sunday, sources=("Global Desk",)),
        week="2026-W47",
    )
    assert {i.article.id for i in w47.items} == {"spans", "dup"}
    # Both the carried article and the merged duplicate come back with a new date in W48.
    moved = [art("spans", at=W48 + timedelta(hours=3)), art("dup2", at=W48 + timedelta(hours=4))]
    w48 = build(config, store, *moved, art("fresh"))
    assert [i.article.id for i in w48.items] == ["fresh"]
    assert "skipped 2 articles an earlier edition carried" in w48.notes


def test_building_again_needs_force_and_then_replaces(config: Config, store: Store) -> None:
    first = build(config, store, art("one"))
    with pytest.raises(UsageError) as err:
        build(config, store, art("two"))
    assert str(err.value) == "edition weekly/2026-W48 already exists (draft, 1 article)"
    assert "--force" in (err.value.hint or "")
    assert store.editions.get(first.key) == first
    again = select_edition(config, store, "weekly", "2026-W48", now=NOW, force=True)
    assert [i.article.id for i in again.items] == ["one", "two"]  # same time: id breaks the tie
    assert store.editions.get(first.key) == again


def test_an_edition_with_deliveries_is_never_rebuilt(config: Config, store: Store) -> None:
    first = build(config, store, art("one"))
    with store.engine.begin() as conn:
        conn.execute(
            insert(deliveries).values(
                edition_key=first.key,
                subscriber_id=1,
                email="ana@example.com",
                content_key="k",
                state="sent",
                created_at=NOW,
                updated_at=NOW,
            )
        )
    store.articles.upsert([art("two")], now=NOW)
    with pytest.raises(UsageError) as err:
        select_edition(config, store, "weekly", "2026-W48", now=NOW, force=True)
    assert str(err.value) == "edition weekly/2026-W48 has deliveries; it can no longer be rebuilt"
    assert store.editions.get(first.key) == first
    with pytest.raises(UsageError, match="has deliveries; it can no longer be changed"):
        adjust_edition(config, store, "weekly", "2026-W48", approve, now=NOW)


# -- editor adjustments --------------------------------------------------------------------------


def _three(config: Config, store: Store) -> Edition:
    return build(
        config,
        store,
        art("p1", at=W48 + timedelta(days=3)),
        art("p2", at=W48 + timedelta(days=2)),
        art("p3", at=W48 + timedelta(days=1)),
        art("t1", topics=("tech",)),
    )


def _ids(edition: Edition) -> list[tuple[int, str]]:
    return [(i.rank, i.article.id) for i in edition.items]


def test_pin_puts_an_article_first_in_its_section(config: Config, store: Store) -> None:
    _three(config, store)
    edition = adjust_edition(config, store, "weekly", "2026-W48", lambda e: pin(e, "p3"), now=NOW)
    assert _ids(edition) == [(1, "p3"), (2, "p1"), (3, "p2"), (4, "t1")]
    assert edition.items[0].article.pinned and edition.items[0].reason == "pinned by editor"
    assert store.editions.get(edition.key) == edition


def test_drop_and_move_renumber_the_edition(config: Config, store: Store) -> None:
    edition = _three(config, store)
    edition = drop(edition, "p1")
    assert _ids(edition) == [(1, "p2"), (2, "p3"), (3, "t1")]
    edition = move(edition, "p3", 1)
    assert _ids(edition) == [(1, "p3"), (2, "p2"), (3, "t1")]
    assert edition.notes[-2:] == (
        "editor dropped 'Story p1'",
        "editor moved 'Story p3' to 1 in politics",
    )


def test_move_outside_the_section_is_refused(config: Config, store: Store) -> None:
    edition = _three(config, store)
    with pytest.raises(UsageError) as err:
        move(edition, "p1", 4)
    assert str(err.value) == "position 4: section 'politics' has 3 articles"
    assert err.value.hint == "use a position from 1 to 3"
    with pytest.raises(NotFoundError, match="edition weekly/2026-W48 has no article 'nope'"):
        pin(edition, "nope")


def test_an_approved_edition_refuses_changes(config: Config, store: Store) -> None:
    _three(config, store)
    approved = adjust_edition(config, store, "weekly", "2026-W48", approve, now=NOW)
    assert approved.status == "approved"
    with pytest.raises(UsageError) as err:
        adjust_edition(config, store, "weekly", "2026-W48", lambda e: drop(e, "p1"), now=NOW)
    assert str(err.value) == "edition weekly/2026-W48 is approved; it can no longer be changed"
    assert "--force" in (err.value.hint or "")
    assert store.editions.get("weekly/2026-W48") == approved


def test_adjusting_a_missing_edition_says_how_to_build_it(config: Config, store: Store) -> None:
    with pytest.raises(NotFoundError) as err:
        adjust_edition(config, store, "weekly", "2026-W40", approve, now=NOW)
    assert str(err.value) == "no edition weekly/2026-W40"
    assert err.value.hint == "digest build weekly --week 2026-W40"
