"""An A/B test end to end: the test group is sent by variant, events come back noisy, the
report counts the truth, the decision is taken once after the wait, and the rest of the
list gets the winner (or the default) exactly once, even after a crash mid-send."""

from __future__ import annotations

import email
import email.policy
import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from ab_streams import SentRow, foreign_events, make_stream
from conftest import SECRET, Run
from editions import make_edition
from fake_sendgrid import FakeSendGrid
from sending import KEY, NOW
from statsmodels.stats.proportion import proportions_ztest

from digest import send as sending
from digest.config import Config, load_config
from digest.editions import Edition
from digest.experiments.winner import send_winner
from digest.store import Store
from digest.subscribers import Subscriber
from digest.transports import make_transport

WEEK = "2026-W48"
AUDIENCE = 400
EXPERIMENT = {
    "variants": [
        {"key": "A"},
        {
            "key": "B",
            "subject": "This week: {name}",
            "preheader": "Five stories, one coffee",
            "sender_name": "Ana at Prism",
        },  # fmt: skip
    ],
    "test_share": 0.5,
    "wait": "4h",
    "metric": "clicks",
    "min_sample": 50,
    "default": "A",
}
AFTER_WAIT = NOW + timedelta(hours=5)


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid(now=lambda: NOW) as server:
        yield server


@pytest.fixture
def ab_config(project: Path, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch) -> Config:
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["digests"][0]["experiment"] = EXPERIMENT
    data["delivery"]["sendgrid"]["host"] = fake.url
    data["delivery"]["batch_size"] = 100
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    monkeypatch.setenv("SENDGRID_API_KEY", fake.api_key)
    return load_config(path)


@pytest.fixture
def audience(store: Store, ab_config: Config) -> Edition:
    edition = make_edition(2, ("politics", "tech"))
    store.editions.save(edition)
    mixes = [("politics",), ("politics", "tech")]
    for i in range(AUDIENCE):
        sub = Subscriber(email=f"reader{i}@example.org", topics=mixes[i % 2])
        store.subscribers.add(sub, now=NOW)
    return edition


def _send_test(config: Config, store: Store, edition: Edition) -> sending.SendSummary:
    transport = make_transport("sendgrid", config, edition_key=edition.key, now=lambda: NOW)
    try:
        return sending.send_edition(
            edition, config=config, ledger=store.deliveries, transport=transport,
            secret=SECRET, now=lambda: NOW,
        )  # fmt: skip
    finally:
        transport.close()


def _sent_rows(store: Store) -> list[SentRow]:
    return [
        SentRow(r["id"], r["subscriber_id"], r["email"], r["variant"], r["provider_message_id"])
        for r in store.deliveries.rows(KEY, state="sent")
    ]


def _import(run: Run, tmp_path: Path, events: list[dict[str, Any]], name: str) -> None:
    path = tmp_path / name
    path.write_text(json.dumps(events))
    run("events", "import", str(path))


def test_the_test_group_is_split_by_variant_and_each_variant_renders_as_configured(
    ab_config: Config, store: Store, audience: Edition, fake: FakeSendGrid
) -> None:
    summary = _send_test(ab_config, store, audience)
    rows = list(store.deliveries.rows(KEY))
    by_variant = Counter(r["variant"] for r in rows)
    assert set(by_variant) == {"A", "B"}
    assert abs(sum(by_variant.values()) - AUDIENCE / 2) < AUDIENCE * 0.1  # test_share 0.5
    assert summary.renders == 4  # 2 variants × 2 topic mixes
    bodies = {p["custom_args"]["variant"]: body for body in fake.requests
              for p in body["personalizations"]}  # fmt: skip
    assert bodies["B"]["subject"] == "This week: The Week in Review"
    assert bodies["B"]["from"]["name"] == "Ana at Prism"
    assert "Five stories, one coffee" in bodies["B"]["content"][-1]["value"]
    assert bodies["A"]["from"]["name"] == ab_config.sender.name
    assert bodies["A"]["subject"] != bodies["B"]["subject"]
    # a resend never moves anyone: planning again keeps every row's variant
    before = {r["subscriber_id"]: r["variant"] for r in rows}
    _send_test(ab_config, store, audience)
    assert {r["subscriber_id"]: r["variant"] for r in store.deliveries.rows(KEY)} == before


def test_report_counts_each_row_once_from_a_noisy_stream_and_matches_the_truth(
    ab_config: Config, store: Store, audience: Edition, run: Run, tmp_path: Path
) -> None:
    _send_test(ab_config, store, audience)
    rows = _sent_rows(store)
    stream = make_stream(rows, KEY, rates={"A": (0.30, 0.05), "B": (0.30, 0.20)}, seed=5)
    # the same people got last week's edition too: its events arrive in the same stream
    last_week = "weekly/2026-W47"
    store.editions.save(make_edition(2, ("politics", "tech"), period="2026-W47"))
    store.deliveries.plan(last_week, lambda _id, _t: ("politics|A", "A"), now=NOW)
    other_ids = {r["email"]: r["id"] for r in store.deliveries.rows(last_week)}
    _import(run, tmp_path, stream.events + foreign_events(rows, last_week, other_ids), "a.json")
    _import(run, tmp_path, stream.events, "replay.json")  # a replayed POST changes nothing

    out = json.loads(run("--now", AFTER_WAIT.isoformat(), "ab", "report", "weekly", "--week",
                         WEEK, "--json").output)  # fmt: skip
    assert set(out) == {"metric", "alpha", "min_sample", "variants", "comparisons", "decision"}
    for variant, truth in stream.truth.items():
        got = out["variants"][variant]
        assert {k: got[k] for k in truth} == truth, variant
        assert got["rate"] == pytest.approx(truth["unique_clicks"] / truth["delivered"], abs=1e-9)
        assert got["ci"][0] < got["rate"] < got["ci"][1]
    (comparison,) = out["comparisons"]
    assert set(comparison) == {"variant", "baseline", "diff", "ci_diff", "p_value", "test"}
    assert (comparison["variant"], comparison["baseline"]) == ("B", "A")
    a, b = stream.truth["A"], stream.truth["B"]
    counts, nobs = [b["unique_clicks"], a["unique_clicks"]], [b["delivered"], a["delivered"]]
    assert comparison["p_value"] == pytest.approx(proportions_ztest(counts, nobs)[1], abs=1e-6)
    assert out["decision"] == {"verdict": "winner", "winner": "B"}


def test_before_the_wait_the_report_is_interim_and_nothing_is_decided_or_sent(
    ab_config: Config, store: Store, audience: Edition, run: Run
) -> None:
    _send_test(ab_config, store, audience)
    planned = sum(store.deliveries.counts(KEY).values())
    text = run("--now", (NOW + timedelta(hours=1)).isoformat(), "ab", "report", "weekly",
               "--week", WEEK).output  # fmt: skip
    assert "Interim figures" in text and "Peeking is not a test" in text
    early = run("--now", (NOW + timedelta(hours=1)).isoformat(), "ab", "send-winner", "weekly",
                "--week", WEEK, expect=2)  # fmt: skip
    assert "runs until 2026-11-30T12:00:00+00:00" in early.output
    assert sum(store.deliveries.counts(KEY).values()) == planned
    assert store.experiments.decision(KEY) is None


def _outbox_counts(config: Config) -> Counter[str]:
    folder = config.resolve(config.delivery.outbox_dir) / KEY
    found: Counter[str] = Counter()
    for path in folder.rglob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found[str(message["To"]).strip("<>").split("<")[-1].strip(">")] += 1
    return found


def test_no_significant_winner_sends_the_default_to_the_rest_once_even_after_a_crash(
    ab_config: Config, store: Store, audience: Edition, run: Run, tmp_path: Path
) -> None:
    _send_test(ab_config, store, audience)
    test_emails = {r.email for r in _sent_rows(store)}
    stream = make_stream(_sent_rows(store), KEY, rates={"A": (0.3, 0.06), "B": (0.3, 0.07)},
                         seed=3)  # fmt: skip
    _import(run, tmp_path, stream.events, "events.json")
    outbox = make_transport("outbox", ab_config, edition_key=KEY, now=lambda: AFTER_WAIT)
    batches = []

    def crash_after_two(done: int, _total: int) -> None:
        batches.append(done)
        if len(batches) == 3:
            raise KeyboardInterrupt  # the process dies between two batches

    with pytest.raises(KeyboardInterrupt):
        send_winner(audience, config=ab_config, experiments=store.experiments,
                    ledger=store.deliveries, transport=outbox, secret=SECRET,
                    now=lambda: AFTER_WAIT, progress=crash_after_two)  # fmt: skip
    decision = store.experiments.decision(KEY)
    assert decision is not None and decision.verdict == "no_significant_difference"
    assert decision.variant == "A" and decision.decided_by == "rule"
    assert 0 < len(list(_outbox_counts(ab_config).elements())) < AUDIENCE / 2

    resumed = run("--now", (AFTER_WAIT + timedelta(hours=1)).isoformat(), "ab", "send-winner",
                  "weekly", "--week", WEEK, "--transport", "outbox", "--json")  # fmt: skip
    result = json.loads(resumed.output)
    assert result["decision"]["variant"] == "A"
    assert result["decision"]["decided_at"] == AFTER_WAIT.isoformat()  # decided once
    again = json.loads(run("--now", (AFTER_WAIT + timedelta(hours=2)).isoformat(), "ab",
                           "send-winner", "weekly", "--week", WEEK, "--transport", "outbox",
                           "--json").output)  # fmt: skip
    assert again["send"]["sent"] == 0

    received = _outbox_counts(ab_config)
    everyone = {f"reader{i}@example.org" for i in range(AUDIENCE)}
    assert set(received) == everyone - test_emails  # the rest, and no test recipient
    assert max(received.values()) == 1  # nobody twice
    rest = [r for r in store.deliveries.rows(KEY) if r["variant"].endswith(":rest")]
    assert len(rest) == len(received) and {r["variant"] for r in rest} == {"A:rest"}
    # the test's figures exclude the rest of the list
    report = json.loads(run("ab", "report", "weekly", "--week", WEEK, "--json").output)
    assert sum(v["recipients"] for v in report["variants"].values()) == len(test_emails)


def test_a_person_can_pick_before_the_rule_and_the_rest_gets_that_variant(
    ab_config: Config, store: Store, audience: Edition, run: Run
) -> None:
    _send_test(ab_config, store, audience)
    run("ab", "pick", "weekly", "--week", WEEK, "C", expect=2)
    assert "gets B" in run("ab", "pick", "weekly", "--week", WEEK, "B").output
    refused = run("ab", "pick", "weekly", "--week", WEEK, "A", expect=2)
    assert "already decided" in refused.output
    out = run("--now", AFTER_WAIT.isoformat(), "ab", "send-winner", "weekly", "--week", WEEK,
              "--transport", "outbox").output  # fmt: skip
    assert "rest of the list gets B (person" in out
    variants = Counter(r["variant"] for r in store.deliveries.rows(KEY))
    assert variants["B:rest"] > 0 and "A:rest" not in variants


def test_html_report_is_one_self_contained_page_with_a_chart(
    ab_config: Config, store: Store, audience: Edition, run: Run, tmp_path: Path
) -> None:
    _send_test(ab_config, store, audience)
    stream = make_stream(_sent_rows(store), KEY, rates={"A": (0.3, 0.05), "B": (0.3, 0.1)},
                         seed=9)  # fmt: skip
    _import(run, tmp_path, stream.events, "events.json")
    page = tmp_path / "ab.html"
    run("ab", "report", "weekly", "--week", WEEK, "--html", str(page))
    html = page.read_text()
    assert "<svg" in html and 'name="viewport"' in html
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_report_of_a_digest_without_experiment_says_how_to_add_one(
    store: Store, run: Run, config: Config
) -> None:
    store.editions.save(make_edition(2, ("politics",)))
    out = run("ab", "report", "weekly", "--week", WEEK, expect=2)
    assert "has no experiment" in out.output


def test_bad_experiment_config_names_the_key(project: Path, run: Run) -> None:
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["digests"][0]["experiment"] = {**EXPERIMENT, "default": "Z"}
    path.write_text(yaml.safe_dump(data))
    out = run("check", expect=2)
    assert "digests[0].experiment" in out.output and "'Z' is not a variant" in out.output
    data["digests"][0]["experiment"] = {**EXPERIMENT, "variants": [{"key": "A"}]}
    path.write_text(yaml.safe_dump(data))
    assert "variants" in run("check", expect=2).output
    data["digests"][0]["experiment"] = {**EXPERIMENT, "wait": "soon"}
    path.write_text(yaml.safe_dump(data))
    assert "use a number and m, h or d" in run("check", expect=2).output
