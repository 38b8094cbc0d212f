"""Render emails: MJML compiled once per template, Jinja2 per recipient or group of recipients.

`compile_template` turns templates/NAME.mjml (+ NAME.txt) into a CompiledTemplate once per
process; `render_email` fills it for one edition and one set of topics. Content rendered
without links keeps the UNSUBSCRIBE / PREFERENCES placeholders for per-recipient substitution.
"""

from digest.render.email import GMAIL_CLIP_BYTES, HTML_BUDGET, RenderedEmail, render_email
from digest.render.templates import CompiledTemplate, compile_template
from digest.render.view import PREFERENCES, UNSUBSCRIBE, date_range, subject_for, with_utm

__all__ = [
    "GMAIL_CLIP_BYTES",
    "HTML_BUDGET",
    "PREFERENCES",
    "UNSUBSCRIBE",
    "CompiledTemplate",
    "RenderedEmail",
    "compile_template",
    "date_range",
    "render_email",
    "subject_for",
    "with_utm",
]
