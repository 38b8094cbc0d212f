"""Rendering the weekly email: compiled once, one section per chosen topic, under Gmail's clip."""

from __future__ import annotations

import os
import re
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import mjml
import pytest
from editions import make_article, make_edition, make_item, sixty_article_edition

from digest.config import Config
from digest.errors import ConfigError, TemplateError
from digest.render import (
    GMAIL_CLIP_BYTES,
    HTML_BUDGET,
    PREFERENCES,
    UNSUBSCRIBE,
    CompiledTemplate,
    compile_template,
    date_range,
    render_email,
    subject_for,
    with_utm,
)
from digest.render import templates as templates_module
from digest.shipped import TEMPLATES, shipped

ALL = ("politics", "tech", "economy", "climate", "culture", "health")


@pytest.fixture
def templates() -> Path:
    """The templates digest ships (a project without its own uses these)."""
    return Path(str(shipped(TEMPLATES)))


@pytest.fixture
def compiled(templates: Path) -> CompiledTemplate:
    return compile_template(templates, "weekly")


def _section_names(html: str) -> list[str]:
    return re.findall(r"<h2[^>]*>([^<]+)</h2>", html)


def _card_titles(html: str) -> list[str]:
    return re.findall(r"<h3[^>]*><a [^>]*>([^<]+)</a></h3>", html)


def _with_template(
    templates: Path, tmp_path: Path, mjml: str | None = None, text: str | None = None
) -> Path:
    """A copy of the templates folder with weekly.mjml / weekly.txt replaced."""
    folder = tmp_path / "custom-templates"
    shutil.copytree(templates, folder)
    if mjml is not None:
        (folder / "weekly.mjml").write_text(mjml, encoding="utf-8")
    if text is not None:
        (folder / "weekly.txt").write_text(text, encoding="utf-8")
    return folder


# -- compile once -------------------------------------------------------------------


def test_mjml_compiles_once_however_many_subscribers_render(
    templates: Path, tmp_path: Path, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _with_template(templates, tmp_path)
    calls: list[int] = []
    real = mjml.mjml2html

    def counting(source: str, **kwargs: Any) -> str:
        calls.append(1)
        return real(source, **kwargs)

    monkeypatch.setattr(templates_module, "mjml2html", counting)
    edition = make_edition(n_per_topic=3, topics=ALL)
    topic_sets = [ALL[: 1 + i % len(ALL)] for i in range(300)]
    for topics in topic_sets:
        rendered = render_email(compile_template(folder, "weekly"), config, edition, topics)
        assert len(_section_names(rendered.html)) == len(topics)
    assert len(calls) == 1


def test_an_edited_template_is_compiled_again(
    templates: Path, tmp_path: Path, config: Config
) -> None:
    folder = _with_template(templates, tmp_path)
    first = compile_template(folder, "weekly")
    path = folder / "weekly.mjml"
    path.write_text(path.read_text().replace("Manage your preferences", "Your settings"))
    later = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(later, later))
    second = compile_template(folder, "weekly")
    assert second is not first
    rendered = render_email(second, config, make_edition(), ["politics"])
    assert "Your settings" in rendered.html


# -- template errors ----------------------------------------------------------------


def test_invalid_mjml_names_the_file_and_the_reason(templates: Path, tmp_path: Path) -> None:
    folder = _with_template(
        templates, tmp_path, mjml="<mjml><mj-body><mj-section><mj-column><mj-text>hi</mj-column>"
    )
    with pytest.raises(TemplateError) as err:
        compile_template(folder, "weekly")
    assert str(folder / "weekly.mjml") in str(err.value)
    assert "invalid MJML: unexpected end of stream" in str(err.value)
    assert "an element is not closed" in str(err.value)


def test_invalid_mjml_with_a_position_gives_the_line(templates: Path, tmp_path: Path) -> None:
    folder = _with_template(templates, tmp_path, mjml="\n\n<mj-body></mj-body>\n")
    with pytest.raises(TemplateError) as err:
        compile_template(folder, "weekly")
    assert f"{folder / 'weekly.mjml'}:3: invalid MJML: unexpected token" in str(err.value)


def test_jinja_syntax_error_names_the_file_and_line(templates: Path, tmp_path: Path) -> None:
    source = (templates / "weekly.mjml").read_text()
    broken = source.replace("{{ date_range }}", "{{ date_range }", 1)
    line = source[: source.index("{{ date_range }}")].count("\n") + 1
    folder = _with_template(templates, tmp_path, mjml=broken)
    with pytest.raises(TemplateError) as err:
        compile_template(folder, "weekly")
    assert str(err.value).startswith(f"{folder / 'weekly.mjml'}:{line}: Jinja syntax error:")


def test_jinja_syntax_error_in_the_text_template_names_it(templates: Path, tmp_path: Path) -> None:
    folder = _with_template(templates, tmp_path, text="{{ site.name }}\n{% for x in sections %}\n")
    with pytest.raises(TemplateError) as err:
        compile_template(folder, "weekly")
    assert str(folder / "weekly.txt") in str(err.value)
    assert "Jinja syntax error" in str(err.value)


@pytest.mark.parametrize(
    ("snippet", "reason"),
    [
        (
            "<mj-raw>{% if article_count < 5 %}</mj-raw><mj-raw>{% endif %}</mj-raw>",
            "'<' inside a Jinja tag breaks the MJML parser",
        ),
        (
            '<mj-section><mj-column width="{{ article_count }}px"></mj-column></mj-section>',
            "Jinja in the size attribute 'width' is dropped",
        ),
        ('<mj-sectoin padding="0"></mj-sectoin>', "unknown MJML element <mj-sectoin>"),
    ],
)
def test_input_mjml_would_silently_mangle_is_reported_with_its_line(
    templates: Path, tmp_path: Path, snippet: str, reason: str
) -> None:
    mjml = f"<mjml>\n<mj-body>\n{snippet}\n</mj-body>\n</mjml>\n"
    folder = _with_template(templates, tmp_path, mjml=mjml)
    with pytest.raises(TemplateError) as err:
        compile_template(folder, "weekly")
    assert f"weekly.mjml:3: {reason}" in str(err.value)


def test_inline_mj_style_is_reported(templates: Path, tmp_path: Path) -> None:
    mjml = '<mjml><mj-head>\n<mj-style inline="inline">p {}</mj-style></mj-head><mj-body/></mjml>'
    folder = _with_template(templates, tmp_path, mjml=mjml)
    with pytest.raises(TemplateError, match=r"weekly\.mjml:2: mj-style inline=\.\.\. is ignored"):
        compile_template(folder, "weekly")


def test_missing_template_is_a_template_error(templates: Path) -> None:
    with pytest.raises(TemplateError) as err:
        compile_template(templates, "monthly")
    assert f"{templates / 'monthly.mjml'}: template not found" == str(err.value)


def test_a_template_name_cannot_leave_the_folder(templates: Path) -> None:
    with pytest.raises(TemplateError, match="invalid template name '../weekly'"):
        compile_template(templates, "../weekly")


def test_unknown_variable_is_reported_at_compile_time_with_its_line(
    templates: Path, tmp_path: Path
) -> None:
    mjml = "<mjml>\n<mj-body>\n<mj-section><mj-column><mj-text>{{ sitename }}</mj-text>"
    mjml += "</mj-column></mj-section>\n</mj-body>\n</mjml>\n"
    folder = _with_template(templates, tmp_path, mjml=mjml)
    with pytest.raises(TemplateError) as err:
        compile_template(folder, "weekly")
    assert f"{folder / 'weekly.mjml'}:3: undefined variable 'sitename'" == str(err.value)
    assert "site" in (err.value.hint or "")


def test_undefined_attribute_at_render_names_the_template(
    templates: Path, tmp_path: Path, config: Config
) -> None:
    text = "{% for section in sections %}\n{% for card in section.cards %}\n{{ card.headline }}\n"
    text += "{% endfor %}\n{% endfor %}\n"
    folder = _with_template(templates, tmp_path, text=text)
    compiled = compile_template(folder, "weekly")
    with pytest.raises(TemplateError) as err:
        render_email(compiled, config, make_edition(), ["politics"])
    assert str(err.value).startswith(f"{folder / 'weekly.txt'}:3: undefined variable:")
    assert "headline" in str(err.value)


# -- content ------------------------------------------------------------------------


def test_header_shows_site_digest_name_and_date_range(
    compiled: CompiledTemplate, config: Config
) -> None:
    html = render_email(compiled, config, make_edition(), ["politics"]).html
    assert "Prism Weekly" in html
    assert "The Week in Review" in html
    assert "Nov 23 – 29, 2026" in html
    assert '<html lang="en"' in html


def test_hidden_preheader_lists_the_first_titles(
    compiled: CompiledTemplate, config: Config
) -> None:
    rendered = render_email(compiled, config, make_edition(), ["tech", "politics"])
    first = rendered.items[0].article.title
    assert rendered.preheader.startswith(first)
    hidden = re.search(r'<div style="display:none;[^"]*">([^<]*)</div>', rendered.html)
    assert hidden is not None and hidden.group(1).startswith(first)


def test_sections_only_for_the_subscribers_topics_in_edition_order(
    compiled: CompiledTemplate, config: Config
) -> None:
    edition = make_edition(n_per_topic=2, topics=("politics", "tech", "economy", "health"))
    rendered = render_email(compiled, config, edition, ["health", "politics", "sport"])
    assert _section_names(rendered.html) == ["Politics", "Health"]
    assert [i.topic for i in rendered.items] == ["politics", "politics", "health", "health"]
    assert "\nPOLITICS\n" in rendered.text and "\nHEALTH\n" in rendered.text
    assert "TECHNOLOGY" not in rendered.text


def test_every_card_has_its_thoughts_prompt(compiled: CompiledTemplate, config: Config) -> None:
    edition = make_edition(n_per_topic=3, topics=("politics", "tech"))
    rendered = render_email(compiled, config, edition, ["politics", "tech"])
    assert len(_card_titles(rendered.html)) == 6
    chunks = rendered.html.split("<h3")[1:]
    for item, chunk in zip(rendered.items, chunks, strict=True):
        assert ">Thoughts</p>" in chunk
        assert item.thoughts in chunk
        assert f"Thoughts: {item.thoughts}"[:40] in rendered.text


def test_card_shows_labels_read_time_and_sources(
    compiled: CompiledTemplate, config: Config
) -> None:
    article = make_article("tech", ai=True, read_minutes=4, sources=("Prism Wire", "Global Desk"))
    edition = make_edition(n_per_topic=1, topics=("tech",))
    edition = edition.with_items((make_item(article, rank=1),))
    rendered = render_email(compiled, config, edition, ["tech"])
    assert "AI Analysis</span>" in rendered.html
    assert "4 min read" in rendered.html
    assert "Prism Wire · Global Desk" in rendered.html
    assert "4 min read · Prism Wire · Global Desk · AI Analysis" in rendered.text


def test_ai_disclaimer_only_when_an_included_article_is_ai_generated(
    compiled: CompiledTemplate, config: Config
) -> None:
    human = make_edition(n_per_topic=2, topics=("tech",))
    flagged = make_article("politics", ai=True)
    edition = human.with_items((*human.items, make_item(flagged, rank=3)))
    disclaimer = "Some articles in this email are AI-generated based on source articles"
    with_ai = render_email(compiled, config, edition, ["tech", "politics"])
    assert disclaimer in with_ai.html
    assert disclaimer in " ".join(with_ai.text.split())
    without = render_email(compiled, config, edition, ["tech"])
    assert disclaimer not in without.html
    assert "AI-generated" not in without.text


def test_article_links_carry_utm_and_keep_their_query(
    compiled: CompiledTemplate, config: Config
) -> None:
    article = make_article("tech", url="https://news.example.com/a?id=7&utm_source=feed#top")
    edition = make_edition(n_per_topic=1, topics=("tech",)).with_items(
        (make_item(article, rank=1),)
    )
    rendered = render_email(compiled, config, edition, ["tech"])
    expected = (
        "https://news.example.com/a?id=7&utm_source=digest&utm_medium=email"
        f"&utm_campaign=weekly-2026-W48&utm_content={article.id}#top"
    )
    assert rendered.html.count(f'href="{expected.replace("&", "&amp;")}"') == 2  # title, Read more
    assert expected in rendered.text


def test_utm_campaign_comes_from_the_digest_when_set(
    compiled: CompiledTemplate, config: Config
) -> None:
    digest = config.digests[0].model_copy(update={"utm_campaign": "autumn"})
    config = config.model_copy(update={"digests": [digest]})
    rendered = render_email(compiled, config, make_edition(), ["politics"])
    assert "utm_campaign=autumn&" in rendered.text


def test_with_utm_adds_parameters_to_a_bare_url() -> None:
    url = with_utm("https://x.example/p", campaign="c", content="id1")
    assert (
        url
        == "https://x.example/p?utm_source=digest&utm_medium=email&utm_campaign=c&utm_content=id1"
    )


def test_titles_are_escaped_in_html_and_plain_in_text(
    compiled: CompiledTemplate, config: Config
) -> None:
    article = make_article("tech", title="Q&A: <script>alert(1)</script> explained")
    edition = make_edition(n_per_topic=1, topics=("tech",)).with_items(
        (make_item(article, rank=1),)
    )
    rendered = render_email(compiled, config, edition, ["tech"])
    assert "<script>" not in rendered.html
    assert "Q&amp;A: &lt;script&gt;" in rendered.html
    assert "Q&A: <script>alert(1)</script> explained" in rendered.text


def test_images_carry_alt_text(compiled: CompiledTemplate, config: Config) -> None:
    article = make_article("tech", image="https://cdn.example.com/chip.jpg")
    edition = make_edition(n_per_topic=1, topics=("tech",)).with_items(
        (make_item(article, rank=1),)
    )
    html = render_email(compiled, config, edition, ["tech"]).html
    images = re.findall(r"<img [^>]*>", html)
    assert len(images) == 1
    assert 'src="https://cdn.example.com/chip.jpg"' in images[0]
    assert f'alt="{article.title}"' in images[0]


def test_placeholders_stay_when_no_links_are_given(
    compiled: CompiledTemplate, config: Config
) -> None:
    rendered = render_email(compiled, config, make_edition(), ["politics"])
    for part in (rendered.html, rendered.text):
        assert UNSUBSCRIBE in part and PREFERENCES in part
    assert f'href="{UNSUBSCRIBE}"' in rendered.html


def test_links_replace_the_placeholders(compiled: CompiledTemplate, config: Config) -> None:
    links = {
        UNSUBSCRIBE: "https://digest.example.com/u/abc.def",
        PREFERENCES: "https://digest.example.com/p/ghi?x=1&y=2",
    }
    rendered = render_email(compiled, config, make_edition(), ["politics"], links=links)
    for part in (rendered.html, rendered.text):
        assert UNSUBSCRIBE not in part and PREFERENCES not in part
    assert 'href="https://digest.example.com/u/abc.def"' in rendered.html
    assert 'href="https://digest.example.com/p/ghi?x=1&amp;y=2"' in rendered.html
    assert "Unsubscribe: https://digest.example.com/u/abc.def" in rendered.text
    assert "preferences: https://digest.example.com/p/ghi?x=1&y=2" in rendered.text


def test_same_inputs_render_byte_identical_output(
    compiled: CompiledTemplate, config: Config
) -> None:
    first = render_email(compiled, config, make_edition(ai=True), ["politics", "tech"])
    second = render_email(compiled, config, make_edition(ai=True), ["tech", "politics"])
    assert first == second


def test_text_part_has_every_card_and_the_footer(
    compiled: CompiledTemplate, config: Config
) -> None:
    edition = make_edition(n_per_topic=2, topics=("politics", "economy"))
    rendered = render_email(compiled, config, edition, ["politics", "economy"])
    text = rendered.text
    assert text.startswith("PRISM WEEKLY · The Week in Review\nNov 23 – 29, 2026\n")
    for item in rendered.items:
        assert f"\n{item.article.title}\n{item.article.url}?utm_source=digest" in text
        assert f"{item.article.read_minutes} min read" in text
        assert item.article.summary[:50] in text
    assert text.count("Thoughts: ") == 4
    assert f"Manage your preferences: {PREFERENCES}\nUnsubscribe: {UNSUBSCRIBE}" in text
    assert config.site.postal_address in text
    assert "<" not in text and "&amp;" not in text


# -- size -----------------------------------------------------------------------------


def test_sixty_articles_are_cut_to_fit_under_gmails_clip_with_a_warning(
    compiled: CompiledTemplate, config: Config
) -> None:
    edition = sixty_article_edition()
    rendered = render_email(compiled, config, edition, ALL)
    size = len(rendered.html.encode("utf-8"))
    assert size <= HTML_BUDGET < GMAIL_CLIP_BYTES
    assert 10 < len(rendered.items) < 60
    assert len(rendered.items) + len(rendered.dropped) == 60
    assert max(i.rank for i in rendered.items) < min(i.rank for i in rendered.dropped)
    (warning,) = rendered.warnings
    assert warning.startswith(
        f"dropped {len(rendered.dropped)} lowest-ranked articles to stay under 102 KB: #"
    )
    assert rendered.dropped[0].article.title[:30] in warning
    assert len(_card_titles(rendered.html)) == len(rendered.items)
    # keeping one more article would not have fitted
    best = sorted(edition.items, key=lambda i: i.rank)[: len(rendered.items) + 1]
    bigger = render_email(compiled, config, edition.with_items(tuple(best)), ALL)
    assert bigger.dropped


def test_an_email_near_the_clip_warns_without_dropping(
    compiled: CompiledTemplate, config: Config
) -> None:
    for n in range(10, 40):
        edition = make_edition(n_per_topic=n, topics=("politics",))
        rendered = render_email(compiled, config, edition, ["politics"])
        if len(rendered.html.encode("utf-8")) >= 0.9 * GMAIL_CLIP_BYTES:
            break
    assert not rendered.dropped
    (warning,) = rendered.warnings
    assert re.fullmatch(r"HTML is 9\d\.\d KB, within 10% of Gmail's 102 KB clipping limit", warning)


def test_a_normal_edition_has_no_warnings(compiled: CompiledTemplate, config: Config) -> None:
    rendered = render_email(compiled, config, make_edition(n_per_topic=3, topics=ALL[:5]), ALL)
    assert rendered.warnings == () and rendered.dropped == ()
    assert len(rendered.html.encode("utf-8")) < 90_000


# -- subject and dates --------------------------------------------------------------


def test_subject_follows_the_digest_pattern(config: Config) -> None:
    assert subject_for(config, make_edition()) == "Prism Weekly: The Week in Review, Nov 23–Nov 29"


def test_subject_pattern_with_an_unknown_field_names_the_key(config: Config) -> None:
    digest = config.digests[0].model_copy(update={"subject": "{site} {issue}"})
    config = config.model_copy(update={"digests": [digest]})
    with pytest.raises(ConfigError) as err:
        subject_for(config, make_edition())
    assert str(err.value) == (
        f"{config.path}: digests[0].subject: unknown field {{issue}} "
        "(known: site, name, start, end, week)"
    )


@pytest.mark.parametrize(
    ("start", "end", "text"),
    [
        (date(2026, 11, 23), date(2026, 11, 29), "Nov 23 – 29, 2026"),
        (date(2026, 11, 30), date(2026, 12, 6), "Nov 30 – Dec 6, 2026"),
        (date(2026, 12, 28), date(2027, 1, 3), "Dec 28, 2026 – Jan 3, 2027"),
    ],
)
def test_date_range_reads_naturally(start: date, end: date, text: str) -> None:
    assert date_range(start, end) == text


# -- dark mode and accessibility -------------------------------------------------------
def _email_html(compiled: CompiledTemplate, config: Config) -> str:
    edition = make_edition(n_per_topic=3, topics=("politics", "tech", "climate"))
    return render_email(compiled, config, edition, edition.topics()).html


def test_email_declares_both_colour_schemes_and_dark_styles(
    compiled: CompiledTemplate, config: Config
) -> None:
    html = _email_html(compiled, config)
    assert '<meta name="color-scheme" content="light dark"' in html
    assert '<meta name="supported-color-schemes" content="light dark"' in html
    assert "color-scheme: light dark" in html
    dark = html[html.index("@media (prefers-color-scheme: dark)") :]
    assert "!important" in dark.split("</style>")[0]


def test_email_is_in_english_with_layout_tables_marked_presentation(
    compiled: CompiledTemplate, config: Config
) -> None:
    html = _email_html(compiled, config)
    assert re.search(r'<html lang="en"', html)
    tables = re.findall(r"<table\b[^>]*>", html)
    assert tables and all('role="presentation"' in t for t in tables)


def test_headings_go_down_one_level_at_a_time(compiled: CompiledTemplate, config: Config) -> None:
    levels = [int(n) for n in re.findall(r"<h([1-6])\b", _email_html(compiled, config))]
    assert levels[0] == 1 and levels.count(1) == 1
    assert all(b - a <= 1 for a, b in zip(levels, levels[1:], strict=False))


def test_every_width_and_height_attribute_is_an_integer(
    compiled: CompiledTemplate, config: Config
) -> None:
    edition = make_edition(n_per_topic=2, topics=("politics", "tech"))
    with_images = edition.with_items(
        tuple(
            make_item(make_article("tech", i, image=f"https://img.example.com/{i}.jpg"), rank=i)
            for i in range(1, 3)
        )
    )
    html = render_email(compiled, config, with_images, ("tech",)).html
    assert html.count("<img") == 2
    sizes = re.findall(r'\b(?:width|height)="([^"]*)"', html)
    assert sizes and all(re.fullmatch(r"\d+(px|%)?|auto", s) for s in sizes), sorted(set(sizes))
    for img in re.findall(r"<img[^>]*>", html):
        assert re.search(r'width="\d+"', img), img


def test_a_card_does_not_repeat_the_name_of_its_section(
    compiled: CompiledTemplate, config: Config
) -> None:
    html = _email_html(compiled, config)
    assert html.count(">Politics<") == 1 and html.count(">Technology<") == 1
