"""A real `digest serve` on loopback: one-click over HTTP, and a subscriber's story in Chromium."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from browser import chromium
from conftest import ROOT, SECRET
from serving import stop

from digest.articles import Article
from digest.config import Config
from digest.editions import Edition, EditionItem
from digest.render import PREFERENCES, UNSUBSCRIBE, compile_template, render_email
from digest.store import Store
from digest.subscriber import Subscriber
from digest.tokens import preferences_url, unsubscribe_url

ARTIFACTS = ROOT / "test-artifacts"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
WIDTHS = (375, 1280)


@pytest.fixture
def server(project: Path, store: Store) -> Iterator[str]:
    """`digest serve` on a free loopback port; yields its base URL once /healthz answers."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from digest.cli import main; main()"]
        + ["--config", str(project / "digest.yaml"), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "DIGEST_SECRET": SECRET},
    )
    try:
        yield _wait_until_healthy(proc)
    finally:
        stop(proc, timeout=5)


def _wait_until_healthy(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline().decode() if ready else ""
    found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert found, f"digest serve did not start: {line!r}"
    base = found.group(0)
    for _ in range(50):  # about 5 s at most
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as answer:
                if json.load(answer) == {"status": "ok", "store": "ok"}:
                    return base
        except OSError:
            time.sleep(0.1)
    raise AssertionError("digest serve never answered /healthz")


def _edition() -> Edition:
    def item(rank: int, topic: str, title: str) -> EditionItem:
        article = Article(
            id=f"a{rank}",
            url=f"https://news.example.com/{rank}",
            title=title,
            published_at=datetime(2026, 11, 24, 8, tzinfo=UTC),
            topics=(topic,),
            summary=f"What happened: {title.lower()}.",
            sources=("Prism Wire",),
            read_minutes=4,
        )
        return EditionItem(
            article, topic, rank, "most recent", "What would you do?", ("Prism Wire",)
        )

    return Edition(
        digest="weekly",
        period="2026-W48",
        start=datetime(2026, 11, 23, tzinfo=UTC),
        end=datetime(2026, 11, 30, tzinfo=UTC),
        created_at=NOW,
        items=(
            item(1, "politics", "Coalition talks resume in Brussels"),
            item(2, "tech", "A smaller chip for cheaper phones"),
            item(3, "health", "Why a regular bedtime matters"),
            item(4, "climate", "Tidal power gets a second look"),
        ),
    )


def _email_for(config: Config, subscriber: Subscriber, edition: Edition) -> str:
    assert subscriber.id is not None
    base = config.site.base_url
    links = {
        UNSUBSCRIBE: unsubscribe_url(base, SECRET, subscriber.id, edition.key),
        PREFERENCES: preferences_url(base, SECRET, subscriber.id),
    }
    compiled = compile_template(config.resolve(config.templates_dir), "weekly")
    return render_email(compiled, config, edition, subscriber.topics, links=links).html


def _shoot(page: object, name: str) -> None:
    """Screenshots at phone and desktop width, and no sideways scrolling on the phone."""
    ARTIFACTS.mkdir(exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})  # type: ignore[attr-defined]
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)  # type: ignore[attr-defined]
        overflow = page.evaluate("document.documentElement.scrollWidth")  # type: ignore[attr-defined]
        assert overflow <= width, f"{name} scrolls sideways at {width} px ({overflow} px wide)"


def test_served_one_click_unsubscribe_over_real_http(server: str, store: Store) -> None:
    ana = store.subscribers.add(Subscriber(email="ana@example.com", topics=("tech",)), now=NOW)
    request = urllib.request.Request(
        unsubscribe_url(server, SECRET, ana.id or 0),
        data=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(request, timeout=5) as answer:
        assert answer.status == 200
        assert answer.headers["Set-Cookie"] is None and answer.headers["Location"] is None
    assert store.subscribers.get(ana.id or 0).status == "unsubscribed"  # type: ignore[union-attr]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("one-click unsubscribe must not redirect")


@pytest.mark.browser
def test_subscriber_changes_topics_then_unsubscribes_in_a_browser(
    server: str, config: Config, store: Store, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    served = config.model_copy(update={"site": config.site.model_copy(update={"base_url": server})})
    ana = store.subscribers.add(
        Subscriber(email="ana@example.com", name="Ana", topics=("politics", "tech")), now=NOW
    )
    edition = _edition()
    email = _email_for(served, ana, edition)
    assert "A smaller chip" in email and "Why a regular bedtime" not in email

    with chromium(tmp_path / "chromium", width=WIDTHS[0], height=800) as browser:
        page = browser.new_page()
        page.set_content(email)
        page.get_by_role("link", name="Manage your preferences").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Your preferences")
        page.get_by_label("Technology").uncheck()
        page.get_by_label("Health").check()
        page.get_by_label("Time zone").select_option("Europe/Lisbon")
        page.get_by_role("button", name="Save preferences").click()
        expect(page.get_by_role("status")).to_contain_text("Saved.")
        _shoot(page, "preferences-saved")

        page.set_content(email)
        page.get_by_role("link", name="Unsubscribe").click()
        expect(page.get_by_text("ana@example.com").first).to_be_visible()
        _shoot(page, "unsubscribe")
        page.get_by_role("button", name="Unsubscribe", exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
        _shoot(page, "unsubscribed")
        assert not browser.cookies()

    after = store.subscribers.get(ana.id or 0)
    assert after is not None
    assert after.status == "unsubscribed" and after.timezone == "Europe/Lisbon"
    assert after.topics == ("politics", "health")
    next_email = _email_for(served, after, edition)
    assert "Why a regular bedtime matters" in next_email
    assert "A smaller chip" not in next_email and "Coalition talks" in next_email
