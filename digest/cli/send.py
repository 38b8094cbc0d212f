"""`digest send` and `digest cancel`: deliver an edition, or withdraw its scheduled batches."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from digest import dispatch, lifecycle, proof
from digest import send as sending
from digest.cli import Env, iso_datetime, pass_env
from digest.cli.periods import period_options
from digest.config import secret
from digest.editions import Edition, find_edition
from digest.errors import ExitCode, NotFoundError
from digest.subscribers import Subscriber
from digest.transports import TRANSPORTS, make_transport
from digest.transports.base import Transport


def _edition(env: Env, digest: str, period: str) -> Edition:
    return find_edition(env.config, env.store.editions, digest, period)


@contextmanager
def _progress() -> Iterator[sending.Progress | None]:
    """A bar with rate and ETA on a terminal; nothing when stderr is a file or a pipe."""
    if not sys.stderr.isatty():
        yield None
        return
    bars: list[Any] = []  # made on the first call, when the total is known
    shown = [0]
    started = time.monotonic()

    def update(done: int, total: int) -> None:
        if not bars:
            bar = click.progressbar(
                length=max(total, 1),
                file=sys.stderr,
                show_eta=True,
                show_pos=True,
                label="sending",
                item_show_func=lambda rate: rate,
            )
            bars.append(bar.__enter__())
        rate = done / max(time.monotonic() - started, 1e-6)
        bars[0].update(done - shown[0], f"{rate:,.0f}/s")
        shown[0] = done

    try:
        yield update
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)


@click.command("send")
@click.argument("digest")
@period_options(required=True)
@click.option(
    "--transport", type=click.Choice(sorted(TRANSPORTS)), help="Default: delivery.transport."
)
@click.option(
    "--retry-failed", is_flag=True, help="Send failed rows again (in-doubt ones may arrive twice)."
)
@click.option(
    "--strict", is_flag=True, help="SendGrid: cancel and resend batches in doubt (no duplicates)."
)
@click.option(
    "--send-at",
    callback=iso_datetime,
    metavar="ISO",
    help="SendGrid: deliver at this time (≤ 72 h ahead).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1000),
    help="Rows per batch; default delivery.batch_size.",
)
@click.option(
    "--to",
    "to",
    multiple=True,
    metavar="ADDR",
    help="Test send to ADDR only; the ledger is untouched.",
)
@click.option(
    "--as",
    "as_email",
    metavar="EMAIL",
    help="With --to: show the edition as this subscriber sees it.",
)
@click.option("--no-preflight", is_flag=True, help="Send without the preflight checks.")
@click.option(
    "--include-new", is_flag=True, help="Also send to subscribers who joined after sending began."
)
@click.option(
    "--workers", is_flag=True, help="PostgreSQL: defer the batches to `digest worker` processes."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_env
def send_command(
    env: Env,
    digest: str,
    period: str,
    transport: str | None,
    retry_failed: bool,
    strict: bool,
    send_at: datetime | None,
    batch_size: int | None,
    to: tuple[str, ...],
    as_email: str | None,
    no_preflight: bool,
    include_new: bool,
    workers: bool,
    as_json: bool,
) -> None:
    """Deliver an approved edition, exactly once per subscriber; safe to run again to resume.

    The audience is fixed by the first run: later runs (resume, --retry-failed) never add
    subscribers who joined since, unless --include-new. A draft is refused when the digest
    requires approval (schedule.require_approval, the default): approve it first.

    \b
    Example:
      digest send weekly --week 2026-W05 --transport sendgrid --strict
      digest send weekly --week 2026-W05 --to me@example.com --as ana.lima@example.com
      digest send weekly --week 2026-W05 --workers   # then `digest worker` on each machine
    With --workers (PostgreSQL store) it prepares the edition, queues one task per batch and
    returns; the workers send, and the edition becomes sent once every row is settled.
    Exit code 3 when any delivery failed (see the summary lines for the reasons); 4 when
    the provider refused the account (401/403) or delivery.max_failed_batches batches in a
    row failed: the run stopped at once and undelivered rows stay pending.
    """
    config, edition = env.config, _edition(env, digest, period)
    out = make_transport(
        transport or config.delivery.transport, config, edition_key=edition.key, now=env.now
    )
    try:
        if to:
            _test_send(env, edition, to, as_email, out, as_json)
            return
        options = sending.SendOptions(
            batch_size=batch_size or config.delivery.batch_size,
            retry_failed=retry_failed,
            strict=strict,
            send_at=send_at,
            include_new=include_new,
        )
        from digest.cli.preflight import preflight_before_send

        if workers:
            from digest.taskqueue import Queue, send_queued

            Queue(env.store)  # refuses a SQLite store before the preflight checks
            preflight_before_send(env, edition, skip=no_preflight)
            queued = send_queued(
                edition, config=config, store=env.store, transport=out, secret=secret(),
                now=env.now, options=options,
            )  # fmt: skip
            click.echo(json.dumps(queued.to_dict(), indent=2) if as_json else queued.line())
            return
        preflight_before_send(env, edition, skip=no_preflight)
        with _progress() as progress:
            summary = dispatch.send_now(
                edition,
                config=config,
                store=env.store,
                transport=out,
                secret=secret(),
                now=env.now,
                options=options,
                progress=progress,
            )
    finally:
        out.close()
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        click.echo(summary.line())
        for reason, count in summary.failures:
            click.echo(f"  {count} failed: {reason}")
    if summary.failed:
        raise SystemExit(int(ExitCode.DELIVERY_FAILED))


def _test_send(
    env: Env,
    edition: Edition,
    to: tuple[str, ...],
    as_email: str | None,
    out: Transport,
    as_json: bool,
) -> None:
    subscriber = _subscriber(env, as_email)
    results = proof.test_send(
        edition, subscriber, to, config=env.config, transport=out, secret=secret()
    )
    rows = [{"to": a, "ok": r.ok, "error": r.error} for a, r in zip(to, results, strict=False)]
    if as_json:
        click.echo(json.dumps({"as": subscriber.email, "results": rows}, indent=2))
    else:
        for row in rows:
            status = "sent" if row["ok"] else f"failed: {row['error']}"
            click.echo(f"test to {row['to']} (as {subscriber.email}): {status}")
    if not all(r.ok for r in results):
        raise SystemExit(int(ExitCode.DELIVERY_FAILED))
    note = f"test send to {', '.join(to)}"
    lifecycle.move(env.store.schedules, edition, lifecycle.TEST_SENT, note=note, now=env.now())


def _subscriber(env: Env, as_email: str | None) -> Subscriber:
    if as_email:
        found = env.store.subscribers.get_by_email(as_email)
        if found is None:
            raise NotFoundError(f"no subscriber {as_email}", hint="digest subscribers list")
        return found
    first = next(env.store.subscribers.iter_all(status="active", chunk=1), None)
    if first is None:
        raise NotFoundError("no active subscriber to show the edition as", hint="pass --as EMAIL")
    return first


@click.command("cancel")
@click.argument("digest")
@period_options(required=True)
@pass_env
def cancel_command(env: Env, digest: str, period: str) -> None:
    """Cancel an edition before or during its send; nothing more of it goes out.

    The edition becomes cancelled: a send running elsewhere stops after its batch in
    flight, and no schedule sends it. Its scheduled SendGrid batches are withdrawn, their
    rows back to pending: only batches at least delivery.sendgrid.cancel_margin_seconds
    (600) from their send time can still be withheld; when SendGrid's limit of 10
    cancelled batches is reached, it waits for the oldest to lapse while that still
    leaves time. To send it after all: `digest edition approve`, then `digest send`.

    \b
    Example:
      digest cancel weekly --week 2026-W05
    """
    edition = _edition(env, digest, period)

    def sendgrid() -> Transport:
        return make_transport("sendgrid", env.config, edition_key=edition.key, now=env.now)

    result = dispatch.cancel_edition(
        edition, store=env.store, make_transport=sendgrid, now=env.now, sleep=time.sleep
    )
    batches = "batch" if result.batches == 1 else "batches"
    click.echo(f"cancelled {result.batches} {batches}, {result.rows} deliveries back to pending")
    if result.missed:
        click.echo(f"{result.missed} batches were too close to their send time to be withheld")
        raise SystemExit(int(ExitCode.DELIVERY_FAILED))


COMMANDS: list[click.Command] = [send_command, cancel_command]
