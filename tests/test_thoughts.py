"""Thoughts prompts: the article's own first, then one from the body's open questions, then
the topic's fallbacks, never repeating a prompt within an edition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from digest.articles import Article
from digest.config import Config
from digest.select import select_edition
from digest.store import Store
from digest.text import paragraphs
from digest.thoughts import GENERIC, Prompt, choose_thoughts, derive_prompt

WHEN = datetime(2026, 11, 25, 9, tzinfo=UTC)
POLITICS = (
    "Which side of this story do you think is missing from the coverage?",
    "What would change your mind about this?",
    "Who gains and who loses if this holds for a year?",
)


def art(
    id: str, body: str = "", thoughts: tuple[str, ...] = (), published_at: datetime = WHEN
) -> Article:
    return Article(
        id=id,
        url=f"https://news.example.com/{id}",
        title=f"Headline {id}",
        published_at=published_at,
        topics=("politics",),
        body_html=body,
        thoughts=thoughts,
    )


@pytest.mark.parametrize(
    ("body", "prompt"),
    [
        (
            "<p>Yet both governments are proceeding.</p><p>The question becomes whether this "
            "pragmatic approach can survive the next political crisis between the two "
            "countries—and there will be one.</p>",
            "Do you think this pragmatic approach can survive the next political crisis "
            "between the two countries?",
        ),
        (
            "<p>It remains to be seen whether the ceasefire will hold through the winter.</p>",
            "Do you think the ceasefire will hold through the winter?",
        ),
        (
            "<p>Talks ended late. What is unclear is whether Brussels will accept the "
            "compromise &ndash; diplomats were cautious.</p>",
            "Do you think Brussels will accept the compromise?",
        ),
        (
            "<p>The merger raises the question of whether smaller lenders can still compete.</p>",
            "Do you think smaller lenders can still compete?",
        ),
        (
            "<p>The real question is whether Mr. Lee can hold the coalition together; few "
            "think so.</p>",
            "Do you think Mr. Lee can hold the coalition together?",
        ),
        (
            "<p>It remains to be seen whether the U.S. will join.</p>",
            "Do you think the U.S. will join?",
        ),
        (
            "<p>It remains to be seen whether buyers will keep their phones longer, or whether "
            "marketing will keep the upgrade cycle turning.</p>",
            "Do you think buyers will keep their phones longer?",
        ),
        (
            "<p>It remains to be seen whether education ministries will take over the bills "
            "after that.</p>",
            "Do you think education ministries will take over the bills after that?",
        ),
        (
            "<p>Prices rose again.</p><p>would you pay more for a phone that lasts ten years?</p>",
            "Would you pay more for a phone that lasts ten years?",
        ),
    ],
)
def test_an_open_question_in_the_body_becomes_one_clean_prompt(body: str, prompt: str) -> None:
    assert derive_prompt(art("q", body=body)) == prompt


@pytest.mark.parametrize(
    "body",
    [
        "",
        "<p>No questions here. Just facts about the budget.</p>",
        "<p>It remains to be seen whether.</p>",  # nothing left to ask
        "<p>It remains to be seen whether the plan, which critics call vague, and</p>",
        "<p>What comes next?</p>",  # too short to ask anyone
        "<p>Will prices fall next year? No, say most economists.</p>",  # answered at once
        "<p>“Can you really trust them?” the minister asked.</p>",  # someone else's words
        "<blockquote><p>Would you trust them with your data?</p></blockquote>",
        "<p>It is unclear whether the deal (signed in May will last.</p>",  # unbalanced
        "<p>What is unclear is whether officials knew of the fact that.</p>",  # cut short
        "<p>It remains to be seen whether judges will treat an open model more like a published "
        "book, whose author is rarely liable for what readers do with it, or more like a part "
        "sold to a manufacturer that builds it into a product.</p>",  # too long for a prompt
    ],
)
def test_a_body_without_a_usable_question_gives_no_prompt(body: str) -> None:
    assert derive_prompt(art("q", body=body)) is None


def test_sentences_do_not_split_on_abbreviations() -> None:
    body = "<p>Mr. Lee met U.S. officials. They agreed!</p><ul><li>Next point</li></ul>"
    assert paragraphs(body) == [["Mr. Lee met U.S. officials.", "They agreed!"], ["Next point"]]


def test_prompts_come_from_own_then_body_then_topic_fallbacks() -> None:
    question = "<p>It remains to be seen whether the truce will hold.</p>"
    cards = [
        (art("own", body=question, thoughts=("What would you ask the negotiators?",)), "politics"),
        (art("derived", body=question), "politics"),
        (art("plain", body="<p>Facts only.</p>"), "politics"),
    ]
    assert choose_thoughts(cards, {"politics": POLITICS}) == [
        Prompt("What would you ask the negotiators?", "own"),
        Prompt("Do you think the truce will hold?", "derived"),
        Prompt(POLITICS[0], "fallback"),
    ]


def test_no_prompt_repeats_in_an_edition_even_when_pools_run_out() -> None:
    same = "<p>It remains to be seen whether the truce will hold.</p>"
    cards = [(art(f"a{i}", body=same if i < 2 else ""), "politics") for i in range(8)]
    prompts = [p.text for p in choose_thoughts(cards, {"politics": POLITICS}, offset=1)]
    assert len(set(prompts)) == len(prompts) == 8
    assert prompts[0] == "Do you think the truce will hold?"
    assert prompts[1] == POLITICS[2]  # the best fit: it shares "hold" with the article
    assert prompts[2:4] == [POLITICS[1], POLITICS[0]]  # equals: rotated from offset 1
    assert prompts[4:] == list(GENERIC[:4])


def test_prompts_already_shown_are_not_used_again() -> None:
    shown = [POLITICS[0], "Mine?"]
    cards = [(art("x", thoughts=("Mine?", "Second of mine?")), "politics"), (art("y"), "politics")]
    chosen = choose_thoughts(cards, {"politics": POLITICS}, used=shown)
    assert [p.text for p in chosen] == ["Second of mine?", POLITICS[1]]


def test_the_edition_freezes_one_distinct_prompt_per_card(config: Config, store: Store) -> None:
    articles = [
        art("p1", thoughts=("Own prompt?",), published_at=WHEN + timedelta(hours=1)),
        art("p2", body="<p>It remains to be seen whether the truce will hold.</p>"),
        art("p3", published_at=WHEN - timedelta(hours=1)),
    ]
    store.articles.upsert(articles, now=WHEN)
    edition = select_edition(config, store, "weekly", "2026-W48", now=WHEN)
    thoughts = [i.thoughts for i in edition.items]
    assert thoughts[:2] == ["Own prompt?", "Do you think the truce will hold?"]
    assert [i.prompt_origin for i in edition.items] == ["own", "derived", "fallback"]
    assert thoughts[2] in config.topic("politics").thoughts
    assert store.editions.get(edition.key).items[2].thoughts == thoughts[2]  # type: ignore[union-attr]


def test_a_fallback_never_takes_a_prompt_a_later_article_owns() -> None:
    cards = [(art("plain"), "politics"), (art("owner", thoughts=(POLITICS[0],)), "politics")]
    chosen = choose_thoughts(cards, {"politics": POLITICS})
    assert [p.text for p in chosen] == [POLITICS[1], POLITICS[0]]


# -- the article's own questions, ranked; fallbacks that fit --------------------------------

TECH = (
    "Would you trust this technology with your own data? Why or why not?",
    "What problem does this really solve, and for whom?",
    "Where do you expect this to be in five years?",
)


def test_a_body_closing_on_a_plain_question_gets_a_prompt_from_it() -> None:
    body = (
        "<p>The ministry approved the plan on Tuesday. Is it enough? Officials think so.</p>"
        "<p>Funding runs to 2028. What happens to the clinics when the money runs out?</p>"
    )
    assert derive_prompt(art("close", body=body)) == (
        "What do you think happens to the clinics when the money runs out?"
    )


def test_an_article_opening_with_a_question_gets_a_prompt_from_it() -> None:
    body = (
        "<p>Can a city of nine million people live without private cars in its centre? "
        "Oslo is about to find out.</p><p>The council voted on Monday.</p>"
    )
    assert derive_prompt(art("open", body=body)) == (
        "Can a city of nine million people live without private cars in its centre? "
        "What do you think?"
    )


def test_a_question_in_the_summary_counts_and_a_framed_one_outranks_a_mid_body_one() -> None:
    article = Article(
        id="s",
        url="https://news.example.com/s",
        title="Budget talks",
        published_at=WHEN,
        summary="The test will be whether the coalition can pass the budget before March.",
        body_html="<p>Who pays for the repairs in the meantime? Talks went on late.</p>"
        "<p>Ministers met again on Friday.</p>",
    )
    assert derive_prompt(article) == "Do you think the coalition can pass the budget before March?"


def test_a_fallback_never_names_a_subject_the_article_lacks() -> None:
    science = Article(
        id="sci",
        url="https://news.example.com/sci",
        title="Fly brain wiring mapped in full",
        summary="Researchers charted all 139,000 neurons of a fruit fly brain.",
        published_at=WHEN,
        topics=("tech",),
    )
    funding = Article(
        id="fund",
        url="https://news.example.com/fund",
        title="Start-up raises funding for battery plant",
        summary="The company raised 200 million euros from investors.",
        published_at=WHEN,
        topics=("tech",),
    )
    privacy = Article(
        id="priv",
        url="https://news.example.com/priv",
        title="Phone maker stores voice data in the cloud",
        summary="The technology sends recordings of your data to servers abroad.",
        published_at=WHEN,
        topics=("tech",),
    )
    for offset in range(3):  # whatever the week's rotation
        chosen = choose_thoughts(
            [(science, "tech"), (funding, "tech"), (privacy, "tech")],
            {"tech": TECH},
            offset=offset,
        )
        assert TECH[0] not in (chosen[0].text, chosen[1].text)
        assert chosen[2] == Prompt(TECH[0], "fallback")  # the one it fits, chosen for fit
