"""Render an edition as each variant of its digest's A/B test: template, subject pattern,
preheader and sender name; each template compiled once, each (variant, topic mix) rendered
once by the send's content cache."""

from __future__ import annotations

from collections.abc import Callable

from digest.config import Config, Variant
from digest.editions import Edition
from digest.render import CompiledTemplate, RenderedEmail, compile_template, render_email


def variants_of(config: Config, digest_key: str) -> dict[str, Variant | None]:
    """Variant key → its settings; one plain variant `A` for a digest without a test."""
    experiment = config.digest(digest_key).experiment
    if experiment is None:
        return {"A": None}
    return {v.key: v for v in experiment.variants}


def variant_renderer(
    config: Config, edition: Edition
) -> Callable[[tuple[str, ...], str], RenderedEmail]:
    """`(topics, variant) -> content with link placeholders`; templates compiled up front, so
    a template that does not compile stops the send before its first row is claimed."""
    spec = config.digest(edition.digest)
    folder = config.resolve(config.templates_dir)
    variants = variants_of(config, edition.digest)
    compiled: dict[str, CompiledTemplate] = {}
    for variant in variants.values():
        name = (variant.template if variant else None) or spec.template
        if name not in compiled:
            compiled[name] = compile_template(folder, name)

    def render(topics: tuple[str, ...], key: str) -> RenderedEmail:
        variant = variants.get(key)
        template = compiled[(variant.template if variant else None) or spec.template]
        return render_email(template, config, edition, topics, links=None, variant=variant)

    return render
