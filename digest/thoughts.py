"""Thoughts prompts: one per card, never the same twice in one edition.

In order: a prompt the source supplied (`own`); else the best of the article's own open
questions, put to the reader (`derived`); else the fallback that fits the article's words
best (`fallback`). Open questions are direct questions in the summary or body and framed
ones ("the question becomes whether …", "it remains to be seen whether …", "the test will
be whether …"), ranked by where they stand, their length, and whether the author answers
them at once (a rhetorical question). A fallback that names a subject the article never
mentions ("your own data" under a story about funding) is never chosen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from digest.articles import Article
from digest.text import is_abbreviation, paragraphs, sentences, stems

OWN, DERIVED, FALLBACK = "own", "derived", "fallback"

# Used after a topic's own fallbacks, chosen the same way (by fit).
GENERIC: tuple[str, ...] = (
    "What surprised you most in this story?",
    "What would you want to know before forming a view on this?",
    "Who do you think is best placed to act on this, and why?",
    "How might this look different a year from now?",
    "What question would you ask the people at the centre of this story?",
    "Which detail here would you share with a friend, and why?",
    "What is one assumption in this story you would challenge?",
    "Does this change how you see the issue? In what way?",
)

# Words a prompt uses to frame a question. Any other word in a fallback names a subject
# ("technology", "data", "doctor", "budget"), which the article must mention.
_FRAMING_WORDS = (
    "think side story missing coverage change mind gain lose loses hold holds year years trust "
    "own why problem really solve whom expect five show blip trend tell bear cost choice make "
    "differently reading trade off find hardest hard accept remind life recommend friend "
    "question ask weigh risk risks take every day surprised surprise know want forming form "
    "view best placed place act look different now people centre center detail share "
    "assumption challenge see issue way one like feel matter agree disagree first next long "
    "time happen happens work worth most least right wrong good bad would could should might "
    "something anything someone anyone everyone nobody thing things part role side sides here if"
)
_FRAMING = frozenset(stems(_FRAMING_WORDS))

_CUE = re.compile(
    r"""(?:\bthe\s+(?:(?:real|big|bigger|open|key|central|remaining|hard|harder|only|next)\s+)?
           question\s+(?:now\s+|then\s+|here\s+)?(?:is|becomes|remains|was|will\s+be)\s*:?\s+
       |\bthe\s+(?:real\s+|big\s+|next\s+|first\s+)?test\s+(?:now\s+)?(?:is|will\s+be)\s*:?\s+
       |\bit\s+remains\s+to\s+be\s+seen\s+
       |\bwhat\s+(?:is|remains)\s+(?:still\s+)?(?:unclear|uncertain|unknown)\s+is\s+
       |\braises?\s+the\s+(?:\w+\s+)?question\s+of\s+
       |\b(?:nobody|no\s+one)\s+knows\s+(?:yet\s+)?
       |\bit\s+is\s+(?:still\s+|not\s+yet\s+)?(?:unclear|uncertain|not\s+clear)\s+)
       (?:whether|if)\s+(?:or\s+not\s+)?(?P<clause>.+)$""",
    re.IGNORECASE | re.VERBOSE,
)
# "Whether the truce holds remains to be seen."
_WHETHER_FIRST = re.compile(
    r"^whether\s+(?P<clause>.+?),?\s+(?:remains\s+to\s+be\s+seen|is\s+(?:still\s+)?"
    r"(?:unclear|uncertain|an\s+open\s+question)|remains\s+(?:unclear|an\s+open\s+question))"
    r"[.!]?$",
    re.IGNORECASE,
)
_DASH = re.compile(r"\s*(?:—|–|\s-{1,2}\s)")
_READER = re.compile(r"\byou(?:r|rs|rself)?\b", re.IGNORECASE)
_QUOTES = re.compile(r"[\"“”«»]")
_AUX_WORDS = (
    "will would can could should shall may might must is are was were do does did has have had"
)
_AUX = frozenset(_AUX_WORDS.split())
_WH = frozenset({"who", "what"})
# The first words of an answer given straight after a question: the question was rhetorical.
_ANSWER = re.compile(
    r"^(?:yes|no|not\b|nope|hardly|probably|perhaps|maybe|certainly|absolutely|of course|"
    r"far from it|the answer|the short answer|because|in short|it depends|almost certainly)",
    re.IGNORECASE,
)
# A clause that ends on one of these was cut mid-thought.
_DANGLING_WORDS = (
    "and or but nor of to the a an with for in on at by as which who whether if than from into"
)
_DANGLING = frozenset(_DANGLING_WORDS.split())
# ... but "that" closes a sentence after these ("after that", "more than that").
_BEFORE_THAT = {"after", "before", "like", "than", "beyond", "about", "all", "just", "of", "with"}
MIN_WORDS, MAX_WORDS = 4, 30


@dataclass(frozen=True)
class Prompt:
    """A card's Thoughts prompt and where it came from: own, derived or fallback."""

    text: str
    origin: str


@dataclass(frozen=True)
class OpenQuestion:
    """A question the article leaves open, as a prompt, with the score it ranked by."""

    prompt: str
    sentence: str
    score: float


def open_questions(article: Article) -> list[OpenQuestion]:
    """The article's open questions turned into prompts, best first."""
    blocks = [sentences(article.summary)] if article.summary else []
    in_summary = len(blocks)
    blocks += paragraphs(article.body_html, quoted=False)
    found: list[OpenQuestion] = []
    for b, block in enumerate(blocks):
        for s, sentence in enumerate(block):
            following = block[s + 1] if s + 1 < len(block) else ""
            prompt, framed = _as_prompt(sentence)
            if prompt is None or (not framed and _ANSWER.match(following)):
                continue  # an answer follows at once: the author's question, not an open one
            score = _score(sentence, framed, b, s, blocks, in_summary, bool(following))
            found.append(OpenQuestion(prompt, sentence, score))
    found.sort(key=lambda q: -q.score)  # stable: the earlier of equals first
    return found


def derive_prompt(article: Article) -> str | None:
    """The best of the article's open questions, put to the reader, or None."""
    found = open_questions(article)
    return found[0].prompt if found else None


def _score(
    sentence: str,
    framed: bool,
    b: int,
    s: int,
    blocks: list[list[str]],
    in_summary: int,
    followed: bool,
) -> float:
    """Higher is better: where it stands, how it is put, how long it is."""
    score = 0.0
    last_block = b == len(blocks) - 1
    if last_block and not followed:
        score += 3  # the article closes on it
    elif b == in_summary and s == 0:
        score += 2.5  # the body opens with it
    elif b < in_summary:
        score += 2  # the summary carries it
    elif last_block or not followed:
        score += 1  # it closes a paragraph: nothing answers it
    if framed:
        score += 1
    if _READER.search(sentence):
        score += 0.5
    words = len(sentence.split())
    if 7 <= words <= 22:
        score += 1
    return score


def _as_prompt(sentence: str) -> tuple[str | None, bool]:
    """The sentence as a question to the reader, and whether it was a framed one."""
    framed = _CUE.search(sentence) or _WHETHER_FIRST.match(sentence)
    if framed:
        return _from_clause(framed.group("clause")), True
    if sentence.endswith("?"):
        return _from_question(sentence), False
    return None, False


def _from_clause(clause: str) -> str | None:
    clause = _DASH.split(clause, maxsplit=1)[0]
    clause = clause.split(";", 1)[0]
    # "whether X, or whether Y": ask about X alone; "Do you think X, or whether Y?" is broken
    clause = re.split(r",?\s+(?:or|and)\s+whether\b", clause, maxsplit=1, flags=re.I)[0]
    clause = re.sub(r"[\s.!?…,:\"”’')]+$", "", clause)
    clause = re.sub(r"\s+or\s+not$", "", clause, flags=re.IGNORECASE)
    return _clean(f"Do you think {clause}?")


def _from_question(question: str) -> str | None:
    """A direct question put to the reader: 'What happens next?' -> 'What do you think
    happens next?'; a question about the world gets 'What do you think?' after it."""
    if _clean(question) is None:
        return None
    words = question.split()
    first, second = words[0].lower(), words[1].lower().strip(",")
    if _READER.search(question):
        return question[0].upper() + question[1:]
    if first in _WH and second not in _AUX and not second.endswith("'s"):
        return f"{words[0].capitalize()} do you think {' '.join(words[1:])}"
    if len(words) + 4 > MAX_WORDS:
        return None
    return f"{question[0].upper()}{question[1:]} What do you think?"


def _clean(question: str) -> str | None:
    """`question` if it reads as one whole sentence, else None (never a broken prompt)."""
    body = question[:-1]
    words = body.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    last, before = words[-1].lower(), words[-2].lower()
    if last in _DANGLING or body.endswith(","):
        return None
    if last == "that" and before not in _BEFORE_THAT:  # "the fact that" is cut short
        return None
    if (
        _QUOTES.search(body)
        or body.count("(") != body.count(")")
        or body.count("[") != body.count("]")
    ):
        return None
    if re.search(r"[?!…]", body):
        return None
    if any(not is_abbreviation(w) for w in re.findall(r"(\S+)\.\s", body)):  # a second sentence
        return None
    return question


# -- fallbacks, by fit ---------------------------------------------------------------------


def fits(prompt: str, article_words: set[str]) -> float | None:
    """How well a fallback fits an article: None when it names a subject the article lacks,
    else the number of its words the article shares."""
    words = set(stems(prompt))
    if any(w not in article_words for w in words - _FRAMING):
        return None
    return float(len(words & article_words))


def _article_words(article: Article) -> set[str]:
    body = " ".join(" ".join(p) for p in paragraphs(article.body_html))
    return set(stems(f"{article.title} {article.summary} {' '.join(article.categories)} {body}"))


def choose_fallback(
    article: Article, pool: Sequence[str], taken: set[str], *, offset: int = 0
) -> str | None:
    """The fitting prompt of `pool` (then GENERIC) not yet taken: the best fit, and among
    equals the next in rotation from `offset`, so consecutive editions vary."""
    start = offset % len(pool) if pool else 0
    rotated = [*pool[start:], *pool[:start], *(p for p in GENERIC if p not in pool)]
    words = _article_words(article)
    best: tuple[float, int, str] | None = None
    for position, prompt in enumerate(rotated):
        if prompt in taken:
            continue
        fit = fits(prompt, words)
        if fit is not None and (best is None or (-fit, position) < (-best[0], best[1])):
            best = (fit, position, prompt)
    return best[2] if best else None


def own_prompt(article: Article, used: Iterable[str] = ()) -> str | None:
    """The first of the article's own prompts not already used in the edition."""
    taken = set(used)
    for prompt in article.thoughts:
        prompt = " ".join(prompt.split())
        if prompt and prompt not in taken:
            return prompt
    return None


def choose_thoughts(
    cards: Sequence[tuple[Article, str]],
    fallbacks: Mapping[str, Sequence[str]],
    *,
    used: Iterable[str] = (),
    offset: int = 0,
) -> list[Prompt]:
    """One prompt per (article, topic) card, in order; no prompt appears twice in the edition.

    `used` are prompts the edition already shows. An empty `text` when every pool is spent.
    """
    taken = set(used)
    chosen: list[Prompt | None] = [None] * len(cards)

    def take(i: int, text: str | None, origin: str) -> None:
        if text and text not in taken:
            chosen[i] = Prompt(text, origin)
            taken.add(text)

    # Own prompts across the whole edition first, so nothing else takes one of them.
    for i, (article, _topic) in enumerate(cards):
        take(i, own_prompt(article, taken), OWN)
    for i, (article, _topic) in enumerate(cards):
        if chosen[i] is None:
            questions = (q.prompt for q in open_questions(article) if q.prompt not in taken)
            take(i, next(questions, None), DERIVED)
    for i, (article, topic) in enumerate(cards):
        if chosen[i] is None:
            pool = fallbacks.get(topic, ())
            take(i, choose_fallback(article, pool, taken, offset=offset), FALLBACK)
    return [p or Prompt("", FALLBACK) for p in chosen]
