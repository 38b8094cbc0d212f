"""Every variant of an A/B test side by side, as one subscriber would get each: sender name,
subject, preheader and the email itself, in one page to review before the test goes out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

from digest.config import Config
from digest.editions import Edition
from digest.experiments.variants import variants_of
from digest.render import compile_template, render_email

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#eef1f4;color:#1b1f24}
h1{font-size:1.2rem;margin:0;padding:14px 16px}
.grid{display:grid;gap:16px;padding:0 16px 16px;
grid-template-columns:repeat(auto-fit,minmax(min(100%,360px),1fr))}
section{background:#fff;border:1px solid #d5dbe2;border-radius:8px;overflow:hidden}
dl{margin:0;padding:10px 14px;display:grid;grid-template-columns:auto 1fr;gap:2px 10px}
dt{color:#5b6672}dd{margin:0;overflow-wrap:anywhere}
iframe{width:100%;height:1600px;border:0;border-top:1px solid #d5dbe2;display:block}
"""


def write_variants(
    config: Config,
    edition: Edition,
    topics: Sequence[str],
    links: Mapping[str, str],
    path: Path,
) -> Path:
    """Write the side-by-side page of every variant to `path` and return it."""
    spec = config.digest(edition.digest)
    folder = config.resolve(config.templates_dir)
    sections = []
    for key, variant in variants_of(config, edition.digest).items():
        compiled = compile_template(
            folder, (variant.template if variant else None) or spec.template
        )
        email = render_email(compiled, config, edition, topics, links=links, variant=variant)
        sender = f"{email.sender_name or config.sender.name} <{config.sender.address}>"
        sections.append(
            f"<section><dl><dt>Variant</dt><dd><strong>{escape(key)}</strong></dd>"
            f"<dt>From</dt><dd>{escape(sender)}</dd>"
            f"<dt>Subject</dt><dd>{escape(email.subject)}</dd>"
            f"<dt>Preheader</dt><dd>{escape(email.preheader)}</dd>"
            f"<dt>Template</dt><dd>{escape(compiled.path.name)}</dd></dl>"
            f'<iframe title="Variant {escape(key)}" srcdoc="{escape(email.html)}"></iframe>'
            "</section>"
        )
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Variants of {escape(edition.key)}</title><style>{CSS}</style></head><body>"
        f"<h1>Variants of {escape(edition.key)}</h1>"
        f'<div class="grid">{"".join(sections)}</div></body></html>'
    )
    path.write_text(page, encoding="utf-8")
    return path
