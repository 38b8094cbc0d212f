"""The one text toolkit: HTML to plain text, sentences (aware of abbreviations), the lead of
a text, read times, and the word stems that duplicate detection and prompt fitting compare.

Summaries, read times and Thoughts prompts all go through these functions, so "Fed chair
Mr. Powell" is one sentence everywhere.
"""

from __future__ import annotations

import html
import math
import re
from functools import lru_cache
from html.parser import HTMLParser

WORDS_PER_MINUTE = 230
SUMMARY_MAX_CHARS = 300

_BLOCK_TAGS = (
    "p div br li ul ol h1 h2 h3 h4 h5 h6 section article header footer blockquote tr td th "
    "table pre hr dd dt figure figcaption"
)
_BLOCKS = frozenset(_BLOCK_TAGS.split())
_HIDDEN = frozenset({"script", "style", "template", "noscript"})
# Quoted or captioned text is someone else's voice, not the author's.
_QUOTED = frozenset({"blockquote", "figcaption", "pre", "code", "q"})


class _Blocks(HTMLParser):
    """Text of an HTML fragment, one string per block; hidden (and optionally quoted) text out."""

    def __init__(self, skip: frozenset[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = [""]
        self.skip = skip
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.skip:
            self.skipping += 1
        if tag in _BLOCKS or tag in self.skip:
            self.blocks.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.skip and self.skipping:
            self.skipping -= 1
        if tag in _BLOCKS or tag in self.skip:
            self.blocks.append("")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.blocks[-1] += data


def text_blocks(fragment: str, *, quoted: bool = True) -> list[str]:
    """The paragraphs of an HTML fragment as plain text; `quoted=False` leaves quotes out."""
    if "<" not in fragment and "&" not in fragment:
        text = " ".join(fragment.split())
        return [text] if text else []
    parser = _Blocks(_HIDDEN if quoted else _HIDDEN | _QUOTED)
    parser.feed(fragment)
    parser.close()
    out = (" ".join(html.unescape(b).split()) for b in parser.blocks)
    return [b for b in out if b]


def plain_text(fragment: str) -> str:
    """Text of an HTML fragment with whitespace collapsed (block ends become spaces)."""
    return " ".join(text_blocks(fragment))


# -- sentences ----------------------------------------------------------------------------

# Words before a full stop that do not end a sentence.
_ABBREVIATION_WORDS = (
    "mr mrs ms mx dr st prof gen sen rep gov lt col sgt capt cmdr adm jr sr inc ltd co corp "
    "plc llc no nos vs approx est dept univ assn bros fig vol ed eds rev hon pres supt "
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs fri sat sun"
)
_ABBREVIATIONS = frozenset(_ABBREVIATION_WORDS.split())
_SENTENCE_END = re.compile(r"[.!?…]+[\"”’')\]]*(?=\s+[\"“‘'(\[]?[A-Z0-9]|\s*$)")


def is_abbreviation(word: str) -> bool:
    """'Mr', 'Dr', 'U.S', 'J': words whose full stop does not end a sentence."""
    word = word.lstrip("(\"“‘'").rstrip(".")
    return word.lower() in _ABBREVIATIONS or bool(re.fullmatch(r"(?:[A-Za-z]\.)*[A-Za-z]", word))


def sentences(text: str) -> list[str]:
    """The sentences of one paragraph of plain text, in order."""
    text = " ".join(text.split())
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        last = text[start : m.start()].rsplit(" ", 1)[-1]
        one_stop = m.group().startswith(".") and len(m.group().rstrip("\"”’')]")) == 1
        if one_stop and is_abbreviation(last):
            continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    if text[start:].strip():
        out.append(text[start:].strip())
    return [s for s in out if s]


def paragraphs(fragment: str, *, quoted: bool = True) -> list[list[str]]:
    """The sentences of an HTML fragment, paragraph by paragraph."""
    return [sentences(block) for block in text_blocks(fragment, quoted=quoted)]


def lead(text: str, limit: int = SUMMARY_MAX_CHARS) -> str:
    """The opening of `text` in whole sentences, at most `limit` characters, never mid-word."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    kept = ""
    for sentence in sentences(text):
        candidate = f"{kept} {sentence}".strip()
        if len(candidate) > limit:
            break
        kept = candidate
    if kept:
        return kept
    # One sentence longer than the limit: cut at the last space and mark the cut.
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:—- ")
    return cut + "…"


def read_minutes(body_html: str) -> int:
    """Minutes to read a body at WORDS_PER_MINUTE, at least one."""
    return max(1, math.ceil(len(plain_text(body_html).split()) / WORDS_PER_MINUTE))


# -- words, for comparing texts -------------------------------------------------------------

_STOP_WORDS = (
    "a an the and or but nor of to in on at for from by with without into onto over under after "
    "before about as is are was were be been being has have had do does did will would can "
    "could should may might must this that these those it its their there they them he she his "
    "her we our you your i not no than then so such very just also new says said say amid while "
    "during between up down out off more most less how why what when who which where per via vs "
    "monday tuesday wednesday thursday friday saturday sunday today yesterday january february "
    "march april june july august september october november december"
)
STOP = frozenset(_STOP_WORDS.split())
_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve"
_NUMBERS = {w: str(i) for i, w in enumerate(_NUMBER_WORDS.split())}
_WORD = re.compile(r"[a-z0-9]+")
_NAME = re.compile(r"\b(?:[A-Z][A-Za-z0-9]*|[0-9]+[A-Za-z%]*)\b")


@lru_cache(maxsize=1 << 16)  # news text repeats its words: stemming is the hot loop
def stem(word: str) -> str:
    """A crude stem ('rates' and 'rated' -> 'rat'); number words become digits."""
    word = _NUMBERS.get(word, word)
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def stems(text: str) -> list[str]:
    """The stems of a text's content words, in order (stop words left out)."""
    found = (stem(w) for w in _WORD.findall(text.lower()) if w not in STOP)
    return [w for w in found if len(w) > 1 or w.isdigit()]


def names(text: str) -> set[str]:
    """Capitalized words and figures: the people, places and numbers a text is about."""
    return {stem(w.lower()) for w in _NAME.findall(text) if w.lower() not in STOP}
