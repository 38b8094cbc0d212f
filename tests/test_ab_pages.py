"""The A/B pages a person reads: the report page and the variants side by side, checked in
headless Chromium at phone and desktop widths, and `digest preview` writing the latter."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from browser import chromium
from conftest import ROOT, Run
from editions import make_edition

from digest.config import Config, load_config
from digest.experiments.ledger import Decision
from digest.experiments.page import render_page
from digest.experiments.report import build_report
from digest.experiments.results import DeliveryFact, EventFact
from digest.store import Store
from digest.subscribers import Subscriber

ARTIFACTS = ROOT / "test-artifacts"
SENT = datetime(2026, 11, 30, 8, tzinfo=UTC)
EXPERIMENT = {
    "variants": [
        {"key": "A"},
        {"key": "B", "subject": "Your week in five minutes", "sender_name": "Ana at Prism"},
        {"key": "C", "preheader": "The one story everyone missed"},
    ],
    "min_sample": 100,
}


class Facts:
    """Three variants of 1,500 delivered each, clicks at 3 %, 3.3 % and 4.6 %."""

    def __init__(self) -> None:
        self.rows: list[DeliveryFact] = []
        self.events: list[EventFact] = []
        for n, (key, clicks) in enumerate({"A": 45, "B": 50, "C": 69}.items()):
            for i in range(1500):
                rid = n * 10_000 + i
                self.rows.append(DeliveryFact(rid, key, "sent", f"r{rid}@example.org", None, SENT))
                self.events.append(EventFact("delivered", f"r{rid}@example.org", rid))
                if i < clicks:
                    self.events.append(EventFact("click", f"r{rid}@example.org", rid))

    def delivery_facts(self, edition_key: str) -> Iterable[DeliveryFact]:
        return self.rows

    def event_facts(self, edition_key: str) -> Iterable[EventFact]:
        return self.events

    def decision(self, edition_key: str) -> Decision | None:
        return None


@pytest.fixture
def ab_project(project: Path) -> Config:
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["digests"][0]["experiment"] = EXPERIMENT
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return load_config(path)


def _no_sideways_scroll(page: object) -> bool:
    return bool(page.evaluate(  # type: ignore[attr-defined]
        "document.documentElement.scrollWidth <= window.innerWidth"
    ))  # fmt: skip


@pytest.mark.browser
def test_report_page_reads_on_a_phone_with_the_chart_in_view(
    ab_project: Config, tmp_path: Path
) -> None:
    report = build_report(ab_project, Facts(), "weekly", "weekly/2026-W48", now=SENT)
    html = tmp_path / "ab.html"
    html.write_text(render_page(report), encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    for width in (375, 1280):
        with chromium(tmp_path / f"profile-{width}", width=width) as browser:
            page = browser.new_page()
            page.goto(html.as_uri())
            assert _no_sideways_scroll(page), f"page scrolls sideways at {width}px"
            box = page.locator("svg").bounding_box()
            assert box is not None and 0 < box["width"] <= width
            assert page.locator("svg circle").count() == 3
            text = page.locator(".verdict").inner_text()
            assert "Verdict: no significant difference" in text
            assert "chi-square" in text and "per variant" in text
            page.screenshot(path=str(ARTIFACTS / f"ab-report-{width}.png"), full_page=True)


@pytest.mark.browser
def test_preview_writes_every_variant_side_by_side(
    ab_project: Config, store: Store, run: Run, tmp_path: Path
) -> None:
    store.editions.save(make_edition(2, ("politics", "tech")))
    store.subscribers.add(Subscriber(email="ana@example.com", topics=("tech",)), now=SENT)
    out = run("preview", "weekly", "--week", "2026-W48", "--subscriber", "ana@example.com",
              "--out", str(tmp_path / "pv")).output  # fmt: skip
    path = tmp_path / "pv" / "ana@example.com.variants.html"
    assert f"variants: {path}" in out
    with chromium(tmp_path / "profile", width=1280) as browser:
        page = browser.new_page()
        page.goto(path.as_uri())
        frames = page.locator("iframe")
        assert frames.count() == 3
        boxes = [page.locator("section").nth(i).bounding_box() for i in range(3)]
        assert all(b is not None for b in boxes)
        assert len({round(b["y"]) for b in boxes if b}) == 1  # side by side on a desktop
        assert len({round(b["x"]) for b in boxes if b}) == 3
        text = page.locator("body").inner_text()
        assert "Your week in five minutes" in text and "Ana at Prism" in text
        assert "The one story everyone missed" in text
        inner = page.frame_locator("iframe").nth(2).locator("body").inner_text()
        assert "Technology" in inner
        page.screenshot(path=str(ARTIFACTS / "ab-variants-1280.png"))
    with chromium(tmp_path / "profile-phone", width=375) as browser:
        page = browser.new_page()
        page.goto(path.as_uri())
        assert _no_sideways_scroll(page)
