"""Thoughts prompts: one per card, the article's own, else one from its open questions, else
the topic's rotated fallbacks, never the same prompt twice in one edition."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from html.parser import HTMLParser

from digest.articles import Article

# Used only when a topic's own fallback prompts are all taken in an edition.
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

_BLOCKS = {"p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "section",
           "article", "header", "footer", "tr", "table", "hr", "dd", "dt"}  # fmt: skip
# Quoted or captioned text is someone else's voice, not the author's question to the reader.
_SKIP = {"blockquote", "figcaption", "script", "style", "pre", "code", "q"}

# Words before a full stop that do not end a sentence.
_ABBREVIATION_WORDS = (
    "mr mrs ms dr st prof gen sen rep gov lt col sgt jr sr inc ltd co corp no vs approx est "
    "jan feb mar apr jun jul aug sep sept oct nov dec"
)
_ABBREVIATIONS = frozenset(_ABBREVIATION_WORDS.split())
_SENTENCE_END = re.compile(r"[.!?…]+[\"”’')\]]*(?=\s+[\"“‘'(\[]?[A-Z0-9]|\s*$)")

_CUE = re.compile(
    r"""(?:\bthe\s+(?:(?:real|big|bigger|open|key|central|remaining|hard|harder|only|next)\s+)?
           question\s+(?:now\s+|then\s+|here\s+)?(?:is|becomes|remains|was)\s*:?\s+
       |\bit\s+remains\s+to\s+be\s+seen\s+
       |\bwhat\s+(?:is|remains)\s+(?:still\s+)?(?:unclear|uncertain|unknown)\s+is\s+
       |\braises?\s+the\s+(?:\w+\s+)?question\s+of\s+
       |\b(?:nobody|no\s+one)\s+knows\s+(?:yet\s+)?
       |\bit\s+is\s+(?:still\s+|not\s+yet\s+)?(?:unclear|uncertain|not\s+clear)\s+)
       (?:whether|if)\s+(?:or\s+not\s+)?(?P<clause>.+)$""",
    re.IGNORECASE | re.VERBOSE,
)
_DASH = re.compile(r"\s*(?:—|–|\s-{1,2}\s)")
_READER = re.compile(r"\byou(?:r|rs|rself)?\b", re.IGNORECASE)
_QUOTES = re.compile(r"[\"“”«»]")
# A clause that ends on one of these was cut mid-thought.
_DANGLING_WORDS = (
    "and or but nor of to the a an with for in on at by as which who whether if than from into"
)
_DANGLING = frozenset(_DANGLING_WORDS.split())
# ... but "that" closes a sentence after these ("after that", "more than that").
_BEFORE_THAT = {"after", "before", "like", "than", "beyond", "about", "all", "just", "of", "with"}
MIN_WORDS, MAX_WORDS = 4, 30


class _Text(HTMLParser):
    """Plain text of sanitized HTML, one block per paragraph, quoted text left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = [""]
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skipping += 1
        if tag in _BLOCKS or tag in _SKIP:
            self.blocks.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP and self.skipping:
            self.skipping -= 1
        if tag in _BLOCKS or tag in _SKIP:
            self.blocks.append("")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.blocks[-1] += data


def sentences(body_html: str) -> list[str]:
    """The body's sentences, in order, with whitespace collapsed."""
    parser = _Text()
    parser.feed(body_html)
    parser.close()
    out: list[str] = []
    for block in parser.blocks:
        text = re.sub(r"\s+", " ", html.unescape(block)).strip()
        start = 0
        for m in _SENTENCE_END.finditer(text):
            last = text[start : m.start()].rsplit(" ", 1)[-1]
            if m.group().startswith(".") and _is_abbreviation(last):
                continue
            out.append(text[start : m.end()].strip())
            start = m.end()
        if text[start:].strip():
            out.append(text[start:].strip())
    return [s for s in out if s]


def _is_abbreviation(word: str) -> bool:
    word = word.lstrip("(\"“‘'")
    return word.lower() in _ABBREVIATIONS or bool(re.fullmatch(r"(?:[A-Za-z]\.)*[A-Za-z]", word))


def derive_prompt(body_html: str) -> str | None:
    """A question for the reader from the body's own open question, or None if it has none."""
    for sentence in sentences(body_html):
        prompt = _from_cue(sentence) or _from_reader_question(sentence)
        if prompt:
            return prompt
    return None


def _from_cue(sentence: str) -> str | None:
    m = _CUE.search(sentence)
    if not m:
        return None
    clause = _DASH.split(m.group("clause"), maxsplit=1)[0]
    clause = clause.split(";", 1)[0]
    # "whether X, or whether Y": ask about X alone; "Do you think X, or whether Y?" is broken
    clause = re.split(r",?\s+(?:or|and)\s+whether\b", clause, maxsplit=1, flags=re.I)[0]
    clause = re.sub(r"[\s.!?…,:\"”’')]+$", "", clause)
    clause = re.sub(r"\s+or\s+not$", "", clause, flags=re.IGNORECASE)
    return _clean(f"Do you think {clause}?")


def _from_reader_question(sentence: str) -> str | None:
    if not sentence.endswith("?") or not _READER.search(sentence):
        return None
    return _clean(sentence[0].upper() + sentence[1:])


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
    if any(not _is_abbreviation(w) for w in re.findall(r"(\S+)\.\s", body)):  # a second sentence
        return None
    return question


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
) -> list[str]:
    """One prompt per (article, topic) card, in order; no prompt appears twice in the edition.

    Order: the article's own prompt, a question derived from its body, the topic's
    `fallbacks` rotated from `offset` (so consecutive editions start at different prompts),
    then GENERIC. `used` are prompts the edition already shows. "" when every pool is spent.
    """
    taken = set(used)
    chosen: list[str | None] = [None] * len(cards)

    def take(i: int, prompt: str | None) -> None:
        if prompt and prompt not in taken:
            chosen[i] = prompt
            taken.add(prompt)

    # Own prompts across the whole edition first, so a fallback never takes one of them.
    for i, (article, _topic) in enumerate(cards):
        take(i, own_prompt(article, taken))
    for i, (article, _topic) in enumerate(cards):
        if chosen[i] is None and article.body_html:
            take(i, derive_prompt(article.body_html))
    for i, (_article, topic) in enumerate(cards):
        if chosen[i] is None:
            pool = list(fallbacks.get(topic, ()))
            start = offset % len(pool) if pool else 0
            rotated = pool[start:] + pool[:start]
            take(i, next((p for p in [*rotated, *GENERIC] if p not in taken), None))
    return [p or "" for p in chosen]
