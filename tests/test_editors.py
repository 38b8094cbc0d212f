"""An editor's commands: approve before sending, cancel, editions, schedule list, run-due
from the command line, cadences (--date, --month), and subscribers choosing digests."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import SECRET, Run
from flask.testing import FlaskClient

from digest.config import Config, load_config
from digest.errors import ConfigError
from digest.store import Store
from digest.subscribers import Subscriber
from digest.tokens import make_token
from digest.web import create_app
from digest.web.context import form_signature

W48 = ("weekly", "--week", "2026-W48")
NOW = "2026-11-30T08:00:00+00:00"


@pytest.fixture
def built(run: Run, store: Store) -> Store:
    run("ingest")
    run("subscribers", "import", "subscribers/", "--skip-invalid")
    run("--now", NOW, "build", *W48)
    return store


def test_send_refuses_a_draft_then_sends_the_approved_edition_once(run: Run, built: Store) -> None:
    refused = run("--now", NOW, "send", *W48, expect=2)
    assert "error: edition weekly/2026-W48 is draft, not approved" in refused.stderr
    assert "hint: review it, then: digest edition approve weekly --week 2026-W48" in refused.stderr
    assert sum(built.deliveries.counts("weekly/2026-W48").values()) == 0
    run("--now", NOW, "edition", "approve", *W48)
    assert run("--now", NOW, "send", *W48).stdout.startswith("sent 26, skipped 0")
    assert run("--now", NOW, "send", *W48).stdout.startswith("sent 0, skipped 26")
    assert built.schedules.state("weekly/2026-W48") == "sent"


def test_a_late_subscriber_is_added_only_with_include_new(run: Run, built: Store) -> None:
    run("--now", NOW, "edition", "approve", *W48)
    run("--now", NOW, "send", *W48)
    run("subscribers", "add", "late@example.org", "--topic", "politics")
    assert run("--now", NOW, "send", *W48).stdout.startswith("sent 0, skipped 26")
    assert built.subscribers.record("late@example.org").deliveries == {}  # type: ignore[union-attr]
    assert run("--now", NOW, "send", *W48, "--include-new").stdout.startswith("sent 1, skipped 26")


def test_cancel_before_sending_stops_every_send_until_approved_again(
    run: Run, built: Store
) -> None:
    run("--now", NOW, "edition", "approve", *W48)
    assert run("--now", NOW, "cancel", *W48).stdout.strip() == (
        "cancelled 0 batches, 0 deliveries back to pending"
    )
    assert "error: edition weekly/2026-W48 is cancelled" in run("send", *W48, expect=2).stderr
    run("--now", NOW, "edition", "approve", *W48)
    assert run("--now", NOW, "send", *W48).stdout.startswith("sent 26")


def test_a_cancel_during_a_send_stops_it_after_the_batch_in_flight(
    config: Config, built: Store
) -> None:
    from digest import dispatch
    from digest.send import SendOptions
    from digest.transports import make_transport

    def now() -> datetime:
        return datetime.now(UTC)

    key = "weekly/2026-W48"
    built.schedules.move(key, "approved", allowed_from=frozenset({"draft"}), note="", now=now())
    edition = built.editions.get(key)
    assert edition is not None
    outbox = make_transport("outbox", config, edition_key=key, now=now)
    calls = []

    class CancelledAfterFirstBatch:
        name = "outbox"

        def send(self, email):  # type: ignore[no-untyped-def]
            calls.append(len(email.recipients))
            if len(calls) == 1:  # an editor cancels from another terminal meanwhile
                dispatch.cancel_edition(edition, store=built, make_transport=lambda: outbox,
                                      now=now, sleep=lambda _s: None)  # fmt: skip
            return outbox.send(email)

        def close(self) -> None:
            outbox.close()

    summary = dispatch.send_now(
        edition, config=config, store=built, transport=CancelledAfterFirstBatch(),  # type: ignore[arg-type]
        secret=SECRET, now=now, options=SendOptions(batch_size=5),
    )  # fmt: skip
    assert summary.stopped and len(calls) == 1 and summary.sent == calls[0] > 0
    counts = built.deliveries.counts(edition.key)
    assert (counts["sent"], counts["sending"], counts["pending"]) == (calls[0], 0, 26 - calls[0])
    assert built.schedules.state(edition.key) == "cancelled"


def test_editions_lists_state_counts_and_the_next_action(run: Run, built: Store) -> None:
    out = run("--now", "2026-11-29T12:00:00Z", "editions", "weekly").stdout.splitlines()
    assert out[0].split()[:3] == ["weekly/2026-W48", "draft", "-"]
    assert out[0].endswith("approve: digest edition approve weekly --week 2026-W48 "
                           "(the send is due at Mon 2026-11-30 07:00 GMT)")  # fmt: skip
    run("--now", NOW, "edition", "approve", *W48)
    run("--now", NOW, "send", *W48)
    rows = json.loads(run("--now", NOW, "editions", "--json").stdout)
    assert [(r["edition"], r["state"], r["deliveries"]["sent"], r["next"]) for r in rows] == [
        ("weekly/2026-W48", "sent", 26, "none: sent")
    ]


def test_schedule_list_shows_the_next_builds_test_sends_and_sends(run: Run) -> None:
    out = run("--now", "2026-11-25T12:00:00Z", "schedule", "list", "--count", "1").stdout
    assert out.splitlines() == [
        "Mon 2026-11-30 01:00 GMT  weekly/2026-W48         build  select and freeze the edition;"
        " an editor approves it before the send",
        "Mon 2026-11-30 01:00 GMT  weekly/2026-W48         test   test send to "
        "editors@digest.example.com",
        "Mon 2026-11-30 07:00 GMT  weekly/2026-W48         send   send to every subscriber",
        "Wed 2026-11-25 16:00 GMT  daily/2026-11-25        build  select and freeze the edition",
        "Wed 2026-11-25 16:30 GMT  daily/2026-11-25        send   send at 06:30 in each "
        "subscriber's zone (from UTC+14 to UTC-12)",
    ]


def test_run_due_from_the_command_line_with_now_and_dry_run(run: Run, built: Store) -> None:
    out = run("run-due", "--now", "2026-11-30T07:00:00Z", "--dry-run").stdout
    assert "weekly/2026-W48  send: would start sending (if approved)" in out
    real = run("run-due", "--now", "2026-11-30T07:00:00Z").stdout
    assert "weekly/2026-W48  wait: not approved yet; waiting until 2026-11-30T09:00+00:00" in real
    assert built.deliveries.counts("weekly/2026-W48")["sent"] == 0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("cron", "0 7 * MON", "digests[0].schedule.cron: cron '0 7 * MON': use 5 fields"),
        ("cron", "0 25 * * *", "digests[0].schedule.cron: cron '0 25 * * *': Bad hour"),
        ("build_lead", "2 hours", "digests[0].schedule.build_lead: duration '2 hours': write it"),
        ("timezone", "Mars/Olympus", "digests[0].schedule.timezone: unknown time zone"),
        ("test_to", ["not-an-address"], "digests[0].schedule.test_to: invalid address"),
    ],
)
def test_a_bad_schedule_names_its_key(project: Path, key: str, value: object, message: str) -> None:
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["digests"][0]["schedule"][key] = value
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)


def test_daily_and_monthly_editions_are_named_by_date_and_month(run: Run, project: Path) -> None:
    path = project / "digest.yaml"
    data = yaml.safe_load(path.read_text())
    data["digests"].append({"key": "monthly", "name": "The Month", "cadence": "monthly",
                            "topics": ["politics", "tech"]})  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    run("ingest")
    assert run("build", "daily", "--date", "2026-11-24").stdout.startswith("daily/2026-11-24")
    assert run("build", "monthly", "--month", "2026-11").stdout.startswith("monthly/2026-11")
    show = run("edition", "show", "monthly", "--date", "2026-11-05").stdout  # a day inside it
    assert show.startswith("monthly/2026-11")
    err = run("build", "daily", "--week", "2026-W48", expect=2).stderr
    assert "'2026-W48' does not name a period of a daily digest" in err
    assert "hint: use --date 2026-11-25" in err
    both = run("build", "daily", "--week", "2026-W48", "--date", "2026-11-24", expect=2).stderr
    assert "give one of --week, --date or --month" in both


def test_subscribers_choose_their_digests_in_files_and_the_first_is_the_default(
    run: Run, project: Path, store: Store
) -> None:
    (project / "lists.csv").write_text(
        "email,topics,digests\n"
        "both@example.org,politics,weekly;daily\n"
        "daily@example.org,politics,daily\n"
        "default@example.org,politics,\n"
    )
    run("subscribers", "import", str(project / "lists.csv"))
    chosen = {s.email: s.digests for s in store.subscribers.iter_all()}
    assert chosen == {"both@example.org": ("weekly", "daily"),
                      "daily@example.org": ("daily",), "default@example.org": ()}  # fmt: skip
    (project / "bad.csv").write_text("email,topics,digests\nx@example.org,politics,hourly\n")
    err = run("subscribers", "import", str(project / "bad.csv"), expect=2).output
    assert "bad.csv:2" in err and "unknown digest 'hourly' (valid: weekly, daily)" in err
    run("ingest")
    run("--now", NOW, "build", *W48)
    run("--now", NOW, "edition", "approve", *W48)
    run("--now", NOW, "send", *W48)
    got = {r["email"] for r in store.deliveries.rows("weekly/2026-W48")}
    assert got == {"both@example.org", "default@example.org"}


def test_the_preference_center_saves_the_digests_chosen(config: Config, store: Store) -> None:
    ana = store.subscribers.add(Subscriber(email="ana@example.com", topics=("tech",)),
                                now=datetime(2026, 11, 25, tzinfo=UTC))  # fmt: skip
    client: FlaskClient = create_app(config, store, now=datetime(2026, 11, 25, tzinfo=UTC),
                                     secret=SECRET).test_client()  # fmt: skip
    tok = make_token(SECRET, "preferences", ana.id or 0)
    page = client.get(f"/p/{tok}").get_data(as_text=True)
    assert 'name="digests" value="weekly" checked' in page
    assert 'name="digests" value="daily">' in page
    form = {"csrf": form_signature(SECRET, tok), "topics": ["tech"], "timezone": "UTC",
            "digests_shown": "1"}  # fmt: skip
    assert client.post(f"/p/{tok}", data={**form, "digests": []}).status_code == 400
    assert client.post(f"/p/{tok}", data={**form, "digests": ["daily"]}).status_code == 200
    assert store.subscribers.get(ana.id or 0).digests == ("daily",)  # type: ignore[union-attr]


def test_editions_lists_the_most_recent_ones_and_counts_only_those(run: Run, store: Store) -> None:
    """Years of editions: `digest editions` lists the 20 made most recently, in key order,
    says how many older ones it left out, and counts the deliveries of those 20 only;
    --last 0 lists every one."""
    from datetime import timedelta

    from editions import make_edition
    from sqlalchemy import Engine, event

    start = datetime(2025, 1, 6, tzinfo=UTC)
    for week in range(1, 26):
        edition = make_edition(1, ("politics",), period=f"2025-W{week:02d}")
        store.editions.save(replace(edition, created_at=start + timedelta(weeks=week)))
    counted: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if "FROM deliveries" in statement:
            counted.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)  # the command opens its own engine
    try:
        out = run("--now", NOW, "editions", "weekly").stdout.splitlines()
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert [line.split()[0] for line in out[:-1]] == [f"weekly/2025-W{w:02d}" for w in range(6, 26)]
    assert out[-1] == "(5 older editions not listed: --last 0 lists every one)"
    assert len(counted) == 20  # one count per edition listed
    rows = json.loads(run("--now", NOW, "editions", "--last", "0", "--json").stdout)
    assert len(rows) == 25 and rows[0]["edition"] == "weekly/2025-W01"
    assert run("editions", "--last", "-1", expect=2).exit_code == 2
