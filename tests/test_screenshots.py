"""The email in a real browser: cards side by side on desktop, stacked on a phone, no overflow,
readable in light and dark colour schemes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import chromium
from conftest import ROOT
from editions import make_edition

from digest.config import Config
from digest.render import PREFERENCES, UNSUBSCRIBE, compile_template, render_email

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium (Debian's, never a downloaded one) for the module."""
    with chromium(tmp_path_factory.mktemp("chromium"), width=800) as context:
        yield context


@pytest.fixture
def email_file(config: Config, tmp_path: Path) -> Path:
    compiled = compile_template(config.resolve(config.templates_dir), "weekly")
    edition = make_edition(n_per_topic=2, topics=("politics", "tech", "climate"), ai=(True, False))
    links = {
        UNSUBSCRIBE: "https://digest.example.com/u/token",
        PREFERENCES: "https://digest.example.com/p/token",
    }
    rendered = render_email(compiled, config, edition, edition.topics(), links=links)
    path = tmp_path / "email.html"
    path.write_text(rendered.html, encoding="utf-8")
    return path


def _open(browser: Any, path: Path, width: int, scheme: str = "light") -> Any:
    page = browser.new_page()
    page.emulate_media(color_scheme=scheme)
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(path.as_uri(), wait_until="load")
    return page


def _card_columns(page: Any) -> list[tuple[dict[str, float], dict[str, float]]]:
    """Bounding boxes of (meta column, main column) for every article card."""
    pairs = []
    for meta in page.locator(".card-meta").all():
        main = meta.locator("xpath=following-sibling::div[contains(@class,'card-main')]")
        pairs.append((meta.bounding_box(), main.first.bounding_box()))
    return pairs


def _scroll_width(page: Any) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def _screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / name
    page.screenshot(path=str(out), full_page=True)
    return out


SCHEMES = pytest.mark.parametrize("scheme", ["light", "dark"])

# The lowest contrast (WCAG) between any text and what it is drawn on, computed in the page.
LOWEST_CONTRAST = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = c => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const background = el => { for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c; }
    return [255, 255, 255]; };
  let worst = [0, "no text"], first = true;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, el = node.parentElement;
    if (!node.textContent.trim() || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden"
        || parseFloat(style.maxHeight) === 0 || parseFloat(style.opacity) === 0) continue;
    const a = lum(rgb(style.color)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (first || ratio < worst[0]) worst = [ratio, node.textContent.trim().slice(0, 40)];
    first = false;
  }
  return worst;
}"""


@SCHEMES
def test_text_is_readable_in_both_colour_schemes(
    browser: Any, email_file: Path, scheme: str
) -> None:
    page = _open(browser, email_file, 800, scheme)
    ratio, text = page.evaluate(LOWEST_CONTRAST)
    assert ratio >= 1, "no text found"
    assert ratio >= 4.5, f"{scheme}: contrast {ratio:.2f} for {text!r}"
    body = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert (body == "rgb(13, 17, 23)") == (scheme == "dark")
    assert _screenshot(page, f"email-800-{scheme}.png").stat().st_size > 10_000
    page.close()


@SCHEMES
def test_card_columns_sit_side_by_side_on_desktop(
    browser: Any, email_file: Path, scheme: str
) -> None:
    page = _open(browser, email_file, 800, scheme)
    pairs = _card_columns(page)
    assert len(pairs) == 6
    for meta, main in pairs:
        assert meta["x"] + meta["width"] <= main["x"] + 1, "main column should sit right of meta"
        assert abs(meta["y"] - main["y"]) < 2, "both columns should start on the same line"
    assert _scroll_width(page) <= 800
    assert _screenshot(page, f"email-800-{scheme}-cards.png").stat().st_size > 10_000
    page.close()


@SCHEMES
def test_card_columns_stack_on_a_phone_without_overflow(
    browser: Any, email_file: Path, scheme: str
) -> None:
    page = _open(browser, email_file, 375, scheme)
    pairs = _card_columns(page)
    assert len(pairs) == 6
    for meta, main in pairs:
        assert main["y"] >= meta["y"] + meta["height"] - 1, "main column should sit below meta"
        assert abs(meta["x"] - main["x"]) < 2, "stacked columns should share a left edge"
        assert main["x"] + main["width"] <= 375
    assert _scroll_width(page) <= 375
    assert _screenshot(page, f"email-375-{scheme}.png").stat().st_size > 10_000
    page.close()
