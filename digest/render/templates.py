"""Compile an email template once: MJML → HTML that is itself a Jinja2 template.

The MJML compiler is slow next to Jinja (≈0.3 ms against ≈0.2 ms per render) and its
output does not depend on the recipient, so it runs once per template file per process;
every recipient then costs one Jinja render. Problems mjml-python would hide (it drops or
mangles some input silently) are reported here, naming the file and line.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

import jinja2
from jinja2 import meta
from mjml import mjml2html

from digest.errors import TemplateError
from digest.shipped import find_template, shipped_template_names

# Every name render_email puts in a template's context; anything else is a typo.
CONTEXT_NAMES = frozenset(
    {
        "site",
        "digest",
        "subject",
        "preheader",
        "date_range",
        "intro",
        "sections",
        "article_count",
        "topic_names",
        "topic_list",
        "ai_generated",
        "unsubscribe_url",
        "preferences_url",
        "web_url",
        "subscribe_url",
    }
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
# mjml-python drops a size attribute whose value it cannot parse as a length.
_SIZE_ATTR = re.compile(
    r"\b((?:[a-z-]*-)?(?:width|height|size|padding|spacing|radius|line-height))"
    r"=\"[^\"]*\{[{%]",
)
_MJ_TAG = re.compile(r"</?(mj-[a-z-]+)")
# Elements mjml-python knows; any other <mj-...> is copied into the HTML as is.
_MJML_ELEMENTS = (
    "mj-head mj-body mj-attributes mj-all mj-class mj-breakpoint mj-font mj-html-attributes"
    " mj-html-attribute mj-selector mj-preview mj-style mj-title mj-accordion"
    " mj-accordion-element mj-accordion-title mj-accordion-text mj-button mj-carousel"
    " mj-carousel-image mj-column mj-divider mj-group mj-hero mj-image mj-include mj-navbar"
    " mj-navbar-link mj-raw mj-section mj-social mj-social-element mj-spacer mj-table"
    " mj-text mj-wrapper"
)
_KNOWN_TAGS = frozenset(_MJML_ELEMENTS.split())
_POSITION = re.compile(r"position (\d+):(\d+)")


@dataclass(frozen=True)
class CompiledTemplate:
    """One email template, ready to render per recipient: HTML and plain-text Jinja templates."""

    name: str
    html: jinja2.Template
    text: jinja2.Template
    path: Path | Traversable  # NAME.mjml: the project's, or the one digest ships
    text_path: Path | Traversable  # NAME.txt, found the same way
    html_source: str  # the MJML source, to point undefined names at a line
    text_source: str


_CACHE: dict[tuple[str, str], tuple[tuple[object, ...], CompiledTemplate]] = {}
_LOCK = threading.Lock()


def html_environment() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)


def text_environment() -> jinja2.Environment:
    # Plain text is not HTML: escaping would print "&amp;" in the reader's mail client.
    return jinja2.Environment(
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def compile_template(templates_dir: Path, name: str) -> CompiledTemplate:
    """Templates NAME.mjml + NAME.txt, compiled once per process and file version.

    Each file comes from `templates_dir` when the project has it, else from the templates
    digest ships (see digest.shipped). The cache is keyed by folder and name, and checks
    which files were found and their mtime and size, so an edited or newly added template
    is picked up without a restart. Raises TemplateError naming the file and the reason
    (and the line when known) for a missing file, invalid MJML or a Jinja syntax error.
    """
    if not _NAME.match(name):
        raise TemplateError(str(templates_dir), f"invalid template name {name!r}")
    mjml_path = _find(templates_dir, f"{name}.mjml")
    text_path = _find(templates_dir, f"{name}.txt")
    stamp = _stamp(mjml_path) + _stamp(text_path)
    key = (str(templates_dir.resolve()), name)
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    compiled = _compile(name, mjml_path, text_path)
    with _LOCK:
        _CACHE[key] = (stamp, compiled)
    return compiled


def _find(templates_dir: Path, filename: str) -> Path | Traversable:
    found = find_template(templates_dir, filename)
    if found is None:
        shipped = ", ".join(shipped_template_names())
        raise TemplateError(
            str(templates_dir / filename),
            "template not found",
            hint=f"create {filename} in {templates_dir}; digest ships: {shipped}",
        )
    return found


def _stamp(path: Path | Traversable) -> tuple[object, ...]:
    if not isinstance(path, Path):
        return (str(path),)  # shipped with the package: changes only with a new install
    try:
        st = path.stat()
    except OSError as exc:
        raise TemplateError(str(path), exc.strerror or str(exc)) from None
    return (str(path), st.st_mtime_ns, st.st_size)


def _read(path: Path | Traversable) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(str(path), f"not UTF-8: {exc.reason}") from None
    except OSError as exc:
        raise TemplateError(str(path), exc.strerror or str(exc)) from None


def _compile(
    name: str, mjml_path: Path | Traversable, text_path: Path | Traversable
) -> CompiledTemplate:
    source = _read(mjml_path)
    text_source = _read(text_path)
    html_env, text_env = html_environment(), text_environment()
    _check_jinja(html_env, source, mjml_path)
    _check_jinja(text_env, text_source, text_path)
    _check_mjml(source, mjml_path)
    try:
        compiled_html = mjml2html(source, disable_comments=True, fonts={})
    except ValueError as exc:
        raise _mjml_error(source, mjml_path, str(exc)) from None
    try:
        html = html_env.from_string(compiled_html)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            str(mjml_path), f"compiled HTML is not a valid Jinja template: {exc.message}"
        ) from None
    return CompiledTemplate(
        name=name,
        html=html,
        text=text_env.from_string(text_source),
        path=mjml_path,
        text_path=text_path,
        html_source=source,
        text_source=text_source,
    )


def _check_jinja(env: jinja2.Environment, source: str, path: Path | Traversable) -> None:
    """Syntax errors and unknown names, with the line in the file the author edits."""
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            str(path), f"Jinja syntax error: {exc.message}", line=exc.lineno
        ) from None
    unknown = sorted(meta.find_undeclared_variables(ast) - CONTEXT_NAMES)
    if unknown:
        raise TemplateError(
            str(path),
            f"undefined variable {unknown[0]!r}",
            line=line_of(source, unknown[0]),
            hint=f"templates can use: {', '.join(sorted(CONTEXT_NAMES))}",
        )


def _check_mjml(source: str, path: Path | Traversable) -> None:
    """Input mjml-python accepts but silently drops or breaks on, reported with its line."""
    for tag in _JINJA_TAG.finditer(source):
        if "<" in tag.group():
            raise TemplateError(
                str(path),
                "'<' inside a Jinja tag breaks the MJML parser; use a test such as "
                "'is lt' or swap the operands",
                line=_line(source, tag.start()),
            )
    size = _SIZE_ATTR.search(source)
    if size:
        raise TemplateError(
            str(path),
            f"Jinja in the size attribute {size.group(1)!r} is dropped by the MJML compiler; "
            "use a fixed value or mj-class",
            line=_line(source, size.start()),
        )
    inline = re.search(r"<mj-style[^>]*\binline=", source)
    if inline:
        raise TemplateError(
            str(path),
            "mj-style inline=... is ignored by mjml-python; put styles in attributes or mj-class",
            line=_line(source, inline.start()),
        )
    for tag in _MJ_TAG.finditer(source):
        if tag.group(1) not in _KNOWN_TAGS:
            raise TemplateError(
                str(path), f"unknown MJML element <{tag.group(1)}>", line=_line(source, tag.start())
            )


def _mjml_error(source: str, path: Path | Traversable, reason: str) -> TemplateError:
    line = None
    position = _POSITION.search(reason)
    if position:
        line = _line(source, int(position.group(1)))
    elif "end of stream" in reason:
        reason += " (an element is not closed)"
    return TemplateError(str(path), f"invalid MJML: {reason}", line=line)


def _line(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def line_of(source: str, name: str) -> int | None:
    """First line where `name` appears inside a Jinja tag, to point an error at it."""
    word = re.compile(rf"\b{re.escape(name)}\b")
    for tag in _JINJA_TAG.finditer(source):
        if word.search(tag.group()):
            return _line(source, tag.start())
    return None
