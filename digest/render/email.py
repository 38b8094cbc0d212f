"""Render one email from a compiled template: Jinja only, and kept under Gmail's clipping size."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from markupsafe import escape

from digest.config import Config, Variant
from digest.editions import Edition, EditionItem
from digest.errors import TemplateError
from digest.render.templates import CompiledTemplate, line_of
from digest.render.view import context, in_sections, preheader, subject_for

# Gmail hides everything past ≈102 KB of HTML behind "[Message clipped]", footer included
# (and with it the unsubscribe link). Content is rendered with short link placeholders;
# the signed URLs that replace them add a few hundred bytes, so the budget leaves room.
GMAIL_CLIP_BYTES = 102 * 1024
HTML_BUDGET = 100_000
NEAR_CLIP_BYTES = int(GMAIL_CLIP_BYTES * 0.9)


@dataclass(frozen=True)
class RenderedEmail:
    """One distinct content: what every recipient with these topics receives, links aside."""

    subject: str
    preheader: str
    html: str
    text: str
    items: tuple[EditionItem, ...]  # the articles shown, in section order
    dropped: tuple[EditionItem, ...]  # lowest-ranked articles left out to stay under the clip
    warnings: tuple[str, ...]
    sender_name: str = ""  # From display name when it differs from sender.name (A/B tests)

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))


def render_email(
    compiled: CompiledTemplate,
    config: Config,
    edition: Edition,
    topics: Iterable[str],
    *,
    links: Mapping[str, str] | None = None,
    variant: Variant | None = None,
    web: bool = False,
) -> RenderedEmail:
    """The email for a subscriber of `topics`: one section per chosen topic the edition has.

    With `links=None` the UNSUBSCRIBE / PREFERENCES placeholders stay in the content, so it
    renders once per distinct content and each recipient's signed URLs are substituted
    later; `links={UNSUBSCRIBE: url, PREFERENCES: url}` substitutes them now. `web=True`
    renders the edition's web page, which carries no personal link at all. Articles are
    dropped, lowest rank first, until the HTML fits HTML_BUDGET; `warnings` says which.
    Same inputs, same bytes. An undefined name in a template raises TemplateError.
    A `variant` of an A/B test sets the subject pattern, preheader and sender name.
    """
    subject = subject_for(config, edition, variant.subject if variant else None)
    lead = variant.preheader if variant else None
    chosen = in_sections(edition, topics)
    html, text = _render(compiled, context(config, edition, chosen, subject, lead, web=web))
    kept = chosen
    dropped: tuple[EditionItem, ...] = ()
    if _size(html) > HTML_BUDGET and len(chosen) > 1:
        kept, html, text = _fit(compiled, config, edition, chosen, subject, lead, web)
        shown = {id(i) for i in kept}
        dropped = tuple(i for i in chosen if id(i) not in shown)
    warnings = _warnings(_size(html), dropped)
    if links:
        html = _substitute(html, {k: str(escape(v)) for k, v in links.items()})
        text = _substitute(text, dict(links))
    return RenderedEmail(
        subject=subject,
        preheader=lead or preheader(kept),
        html=html,
        text=text,
        items=kept,
        dropped=dropped,
        warnings=warnings,
        sender_name=(variant.sender_name if variant else None) or "",
    )


def _size(html: str) -> int:
    return len(html.encode("utf-8"))


def _fit(
    compiled: CompiledTemplate,
    config: Config,
    edition: Edition,
    chosen: tuple[EditionItem, ...],
    subject: str,
    lead: str | None,
    web: bool = False,
) -> tuple[tuple[EditionItem, ...], str, str]:
    """The most best-ranked articles that fit the budget, found by bisection (≈log2 n renders)."""
    by_rank = sorted(chosen, key=lambda i: i.rank)

    def best(n: int) -> tuple[EditionItem, ...]:
        keep = {id(i) for i in by_rank[:n]}
        return tuple(i for i in chosen if id(i) in keep)

    # Invariant: `low` articles fit (or low == 1, the least an email can carry); `high` do not.
    low, high = 1, len(chosen)
    fitted = best(1)
    html, text = _render(compiled, context(config, edition, fitted, subject, lead, web=web))
    while high - low > 1:
        mid = (low + high) // 2
        items = best(mid)
        ctx = context(config, edition, items, subject, lead, web=web)
        mid_html, mid_text = _render(compiled, ctx)
        if _size(mid_html) <= HTML_BUDGET:
            low, fitted, html, text = mid, items, mid_html, mid_text
        else:
            high = mid
    return fitted, html, text


def _warnings(size: int, dropped: Sequence[EditionItem]) -> tuple[str, ...]:
    kb = size / 1024
    out: list[str] = []
    if dropped:
        names = ", ".join(f"#{i.rank} {_quote(i.article.title)}" for i in dropped)
        noun = "article" if len(dropped) == 1 else "articles"
        out.append(f"dropped {len(dropped)} lowest-ranked {noun} to stay under 102 KB: {names}")
    if size > HTML_BUDGET:
        out.append(f"HTML is {kb:.1f} KB: Gmail clips messages over 102 KB")
    elif size >= NEAR_CLIP_BYTES and not dropped:
        out.append(f"HTML is {kb:.1f} KB, within 10% of Gmail's 102 KB clipping limit")
    return tuple(out)


def _quote(title: str) -> str:
    title = " ".join(title.split())
    return f"“{title[:57]}…”" if len(title) > 60 else f"“{title}”"


def _substitute(content: str, values: Mapping[str, str]) -> str:
    for placeholder, value in values.items():
        content = content.replace(placeholder, value)
    return content


def _render(compiled: CompiledTemplate, ctx: dict[str, Any]) -> tuple[str, str]:
    html = _run(compiled.html, ctx, compiled.path, compiled.html_source)
    text = _run(compiled.text, ctx, compiled.text_path, compiled.text_source)
    return html, text


def _run(template: jinja2.Template, ctx: dict[str, Any], path: Any, source: str) -> str:
    try:
        return template.render(ctx)
    except jinja2.UndefinedError as exc:
        name = _undefined_name(exc.message or "")
        line = line_of(source, name) if name else None
        raise TemplateError(str(path), f"undefined variable: {exc.message}", line=line) from None
    except jinja2.TemplateError as exc:
        raise TemplateError(str(path), f"cannot render: {exc}") from None


def _undefined_name(message: str) -> str | None:
    """The missing name in Jinja's "'x' is undefined" / "... has no attribute 'x'"."""
    parts = message.split("'")
    return parts[-2] if len(parts) >= 3 else None
