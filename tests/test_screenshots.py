"""The email in a real browser: cards side by side on desktop, stacked on a phone, no overflow."""

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


def _open(browser: Any, path: Path, width: int) -> Any:
    page = browser.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(path.as_uri(), wait_until="load")
    return page


def _card_columns(page: Any) -> list[tuple[dict[str, float], dict[str, float]]]:
    """Bounding boxes of (meta column, main column) for every article card."""
    pairs = []
    for meta in page.locator(".mj-column-per-30").all():
        main = meta.locator("xpath=following-sibling::div[contains(@class,'mj-column-per-70')]")
        pairs.append((meta.bounding_box(), main.first.bounding_box()))
    return pairs


def _scroll_width(page: Any) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def _screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / name
    page.screenshot(path=str(out), full_page=True)
    return out


def test_card_columns_sit_side_by_side_on_desktop(browser: Any, email_file: Path) -> None:
    page = _open(browser, email_file, 800)
    pairs = _card_columns(page)
    assert len(pairs) == 6
    for meta, main in pairs:
        assert meta["x"] + meta["width"] <= main["x"] + 1, "main column should sit right of meta"
        assert abs(meta["y"] - main["y"]) < 2, "both columns should start on the same line"
    assert _scroll_width(page) <= 800
    assert _screenshot(page, "email-800.png").stat().st_size > 10_000
    page.close()


def test_card_columns_stack_on_a_phone_without_overflow(browser: Any, email_file: Path) -> None:
    page = _open(browser, email_file, 375)
    pairs = _card_columns(page)
    assert len(pairs) == 6
    for meta, main in pairs:
        assert main["y"] >= meta["y"] + meta["height"] - 1, "main column should sit below meta"
        assert abs(meta["x"] - main["x"]) < 2, "stacked columns should share a left edge"
        assert main["x"] + main["width"] <= 375
    assert _scroll_width(page) <= 375
    assert _screenshot(page, "email-375.png").stat().st_size > 10_000
    page.close()
