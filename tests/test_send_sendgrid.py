"""Sending through the fake SendGrid: rate limits, faults, strict mode, test sends, commands."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_sendgrid import FakeSendGrid
from sending import (  # noqa: F401  (fixtures)
    KEY,
    NOW,
    SECRET,
    Sleeps,
    _add,
    _claim,
    _emls,
    _outbox,
    _send,
    edition,
    sendgrid,
    sendgrid_config,
)

from digest import proof
from digest.batch import IN_DOUBT
from digest.compose import ContentCache, default_renderer
from digest.config import Config
from digest.editions import Edition
from digest.store import Store
from digest.tokens import LinkSigner
from digest.transports import make_transport
from digest.transports.base import Transport

# -- through SendGrid (the fake server) ---------------------------------------


def _sendgrid(config: Config) -> Transport:
    return make_transport("sendgrid", config, edition_key=KEY, now=lambda: NOW)


def test_a_rate_limit_is_waited_out_then_the_batch_is_sent(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = sendgrid_config(config, sendgrid, monkeypatch)
    subs = _add(store, 5)
    reset = int(NOW.timestamp()) + 12  # SendGrid says when the window resets, as epoch seconds
    sendgrid.fail_next(429, 1, headers={"X-RateLimit-Reset": str(reset)})
    sleeps = Sleeps()
    summary = _send(cfg, store, edition, _sendgrid(cfg), sleep=sleeps)
    assert summary.sent == 5 and summary.failed == 0
    assert len(sleeps.waits) == 1 and sleeps.waits[0] >= 12
    assert sorted(sendgrid.delivered()) == sorted(s.email for s in subs)
    assert {r["attempts"] for r in store.deliveries.rows(KEY)} == {2}


def test_server_errors_beyond_max_attempts_fail_the_batch_with_the_reason(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = sendgrid_config(config, sendgrid, monkeypatch)
    _add(store, 3)
    attempts = cfg.delivery.max_attempts
    sendgrid.fail_next(500, attempts)
    sleeps = Sleeps()
    summary = _send(cfg, store, edition, _sendgrid(cfg), sleep=sleeps)
    assert (summary.sent, summary.failed) == (0, 3)
    assert len(sleeps.waits) == attempts - 1
    ((reason, count),) = summary.failures
    assert count == 3 and "500" in reason and f"gave up after {attempts} attempts" in reason
    assert sendgrid.delivered() == []


def test_a_rejected_batch_fails_with_the_provider_message_and_the_run_goes_on(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = sendgrid_config(config, sendgrid, monkeypatch)
    _add(store, 12)
    sendgrid.fail_next(400, 1)
    summary = _send(cfg, store, edition, _sendgrid(cfg))
    assert (summary.sent, summary.failed) == (7, 5)
    assert len(sendgrid.delivered()) == 7
    ((reason, _),) = summary.failures
    assert "400" in reason
    failed = list(store.deliveries.rows(KEY, state="failed"))
    assert [r["id"] for r in failed] == sorted(r["id"] for r in failed)[:5]


def test_retry_failed_sends_only_the_failed_rows(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = sendgrid_config(config, sendgrid, monkeypatch)
    subs = _add(store, 12)
    sendgrid.fail_next(400, 1)
    _send(cfg, store, edition, _sendgrid(cfg))
    again = _send(cfg, store, edition, _sendgrid(cfg), retry_failed=True)
    assert (again.sent, again.skipped, again.failed) == (5, 7, 0)
    assert sorted(sendgrid.delivered()) == sorted(s.email for s in subs)


def test_strict_mode_gives_each_batch_its_own_provider_batch_and_a_send_time(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = sendgrid_config(config, sendgrid, monkeypatch)
    _add(store, 12)
    summary = _send(cfg, store, edition, _sendgrid(cfg), strict=True)
    bodies = [r for r in _mail_sends(sendgrid)]
    assert summary.sent == 12 and len(bodies) == 3
    assert len({b["batch_id"] for b in bodies}) == 3
    assert {b["send_at"] for b in bodies} == {int((NOW + timedelta(minutes=11)).timestamp())}
    assert {r["provider_batch_id"] for r in store.deliveries.rows(KEY)} == {
        b["batch_id"] for b in bodies
    }


def test_a_batch_left_in_doubt_is_cancelled_and_resent_in_strict_mode(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = sendgrid_config(config, sendgrid, monkeypatch)
    subs = _add(store, 4)
    transport = _sendgrid(cfg)
    # A crashed run: the batch was claimed and accepted, but its result never recorded.
    store.deliveries.plan(KEY, lambda _id, _topics: ("politics|A", "A"), now=NOW)
    batch = transport.create_batch()  # type: ignore[attr-defined]
    rows = _claim(store, 5, batch_id=batch, scheduled_at=NOW + timedelta(minutes=11))
    content = ContentCache(default_renderer(cfg, edition)).get("politics|A")
    from digest import compose

    recipients = [
        compose.recipient(r, links=LinkSigner(cfg.site.base_url, SECRET), edition=edition)
        for r in rows
    ]
    transport.send(
        compose.compose(
            content,
            recipients,
            config=cfg,
            edition=edition,
            batch_id=batch,
            send_at=NOW + timedelta(minutes=11),
        )
    )
    summary = _send(cfg, store, edition, transport, strict=True)
    assert summary.sent == 4 and summary.failed == 0
    assert batch in sendgrid.cancelled
    assert sorted(sendgrid.delivered()) == sorted(s.email for s in subs)


def test_without_strict_mode_a_batch_in_doubt_is_failed_not_resent(
    config: Config, store: Store, edition: Edition
) -> None:
    _add(store, 8)
    store.deliveries.plan(KEY, lambda _i, t: ("politics|A", "A"), now=NOW)
    _claim(store, 5)
    summary = _send(config, store, edition, _outbox(config))
    assert (summary.sent, summary.failed) == (3, 5)
    assert summary.failures == ((IN_DOUBT, 5),)
    assert len(_emls(config)) == 3


def test_a_test_send_reaches_only_the_given_address_and_touches_no_row(
    config: Config,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = sendgrid_config(config, sendgrid, monkeypatch)
    (ana,) = _add(store, 1, topics=("tech",))
    results = proof.test_send(
        edition, ana, ["editor@example.com"], config=cfg, transport=_sendgrid(cfg), secret=SECRET
    )
    assert [r.ok for r in results] == [True]
    assert sendgrid.delivered() == ["editor@example.com"]
    (body,) = _mail_sends(sendgrid)
    assert body["subject"].startswith("[TEST] ")
    args = {**body.get("custom_args", {}), **body["personalizations"][0].get("custom_args", {})}
    assert args["test"] == "true" and args["delivery_id"] == "0"
    assert list(store.deliveries.rows(KEY)) == []


def _mail_sends(fake: FakeSendGrid) -> list[dict[str, Any]]:
    return list(fake.requests)


# -- the command ---------------------------------------------------------------


def _point_at(project: Path, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", fake.api_key)
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["delivery"]["sendgrid"]["host"] = fake.url
    data["delivery"]["batch_size"] = 5
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


def test_send_command_reports_failures_by_reason_and_exits_3(
    run: Any,
    project: Path,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _point_at(project, sendgrid, monkeypatch)
    _add(store, 12)
    sendgrid.fail_next(400, 1)
    result = run("send", "weekly", "--week", "2026-W48", "--transport", "sendgrid", expect=3)
    lines = result.stdout.splitlines()
    assert lines[0] == "sent 7, skipped 0, suppressed 0, failed 5"
    assert lines[1].startswith("  5 failed: ") and "400" in lines[1]
    again = run(
        "send",
        "weekly",
        "--week",
        "2026-W48",
        "--transport",
        "sendgrid",
        "--retry-failed",
        "--json",
    )
    assert '"sent": 5' in again.stdout and '"skipped": 7' in again.stdout


def test_send_command_needs_a_built_edition(run: Any, store: Store) -> None:
    result = run("send", "weekly", "--week", "2026-W47", expect=2)
    assert "error: no edition weekly/2026-W47" in result.output
    assert "hint: digest build weekly --week 2026-W47" in result.output


def test_cancel_withdraws_scheduled_batches_and_makes_rows_pending(
    run: Any,
    project: Path,
    store: Store,
    edition: Edition,
    sendgrid: FakeSendGrid,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _point_at(project, sendgrid, monkeypatch)
    _add(store, 7)
    now = "2026-11-30T08:00:00+00:00"
    run(
        "--now",
        now,
        "send",
        "weekly",
        "--week",
        "2026-W48",
        "--transport",
        "sendgrid",
        "--send-at",
        "2026-11-30T20:00:00Z",
    )
    result = run("--now", now, "cancel", "weekly", "--week", "2026-W48")
    assert result.stdout.strip() == "cancelled 1 batch, 7 deliveries back to pending"
    assert sendgrid.delivered() == []
    assert store.deliveries.counts(KEY)["pending"] == 7
