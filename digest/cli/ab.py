"""`digest ab`: an A/B test's report, a person's pick, and the winner's send to the rest.

The statistics (scipy, statsmodels) are imported by the commands that use them, so other
commands start fast."""

from __future__ import annotations

import json
from pathlib import Path

import click

from digest.cli import Env, pass_env
from digest.cli.send import _edition
from digest.config import secret
from digest.errors import ExitCode, InputError
from digest.transports import TRANSPORTS, make_transport

WEEK = click.option(
    "--week", required=True, metavar="W", help="ISO week of the edition, e.g. 2026-W05."
)


@click.group("ab")
def ab() -> None:
    """A/B tests: report, pick a variant by hand, send the winner to the rest."""


@ab.command("report")
@click.argument("digest")
@WEEK
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML page with a chart to FILE.",
)
@pass_env
def report_command(env: Env, digest: str, week: str, as_json: bool, html_file: Path | None) -> None:
    """Figures per variant from the provider's events, the statistics and the verdict.

    Interim figures before the end of the wait are not a decision: peeking is not a test.

    \b
    Example:
      digest ab report weekly --week 2026-W05
      digest ab report weekly --week 2026-W05 --json
      digest ab report weekly --week 2026-W05 --html ab.html
    """
    from digest.experiments.page import render_page
    from digest.experiments.report import build_report, table

    edition = _edition(env, digest, week)
    report = build_report(env.config, env.store.experiments, digest, edition.key, now=env.now())
    if html_file is not None:
        try:
            html_file.write_text(render_page(report), encoding="utf-8")
        except OSError as exc:
            raise InputError(str(html_file), exc.strerror or str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(table(report))
        if html_file is not None:
            click.echo(f"html: {html_file}")


@ab.command("pick")
@click.argument("digest")
@WEEK
@click.argument("variant")
@pass_env
def pick_command(env: Env, digest: str, week: str, variant: str) -> None:
    """Decide by hand which VARIANT the rest of the list gets (before the rule decides).

    \b
    Example:
      digest ab pick weekly --week 2026-W05 B
    """
    from digest.experiments.winner import pick

    edition = _edition(env, digest, week)
    decision = pick(env.config, env.store.experiments, edition, variant, now=env.now())
    click.echo(f"{edition.key}: the rest of the list gets {decision.variant}")


@ab.command("send-winner")
@click.argument("digest")
@WEEK
@click.option(
    "--transport", type=click.Choice(sorted(TRANSPORTS)), help="Default: delivery.transport."
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision and summary as JSON.")
@pass_env
def send_winner_command(
    env: Env, digest: str, week: str, transport: str | None, as_json: bool
) -> None:
    """After the wait, decide once and send the winner (or the default variant when nothing
    is significant) to the rest of the list, exactly once; safe to run again to resume.

    \b
    Example:
      digest ab send-winner weekly --week 2026-W05 --transport sendgrid
    """
    from digest.experiments.winner import send_winner

    config, edition = env.config, _edition(env, digest, week)
    out = make_transport(
        transport or config.delivery.transport, config, edition_key=edition.key, now=env.now
    )
    try:
        result = send_winner(
            edition,
            config=config,
            experiments=env.store.experiments,
            ledger=env.store.deliveries,
            transport=out,
            secret=secret(),
            now=env.now,
        )
    finally:
        out.close()
    d, summary = result.decision, result.summary
    if as_json:
        decision = {"variant": d.variant, "verdict": d.verdict, "winner": d.winner,
                    "decided_by": d.decided_by, "decided_at": d.decided_at.isoformat()}  # fmt: skip
        click.echo(json.dumps({"decision": decision, "send": summary.to_dict()}, indent=2))
    else:
        click.echo(f"rest of the list gets {d.variant} ({d.decided_by}: {d.verdict})")
        click.echo(summary.line())
    if summary.failed:
        raise SystemExit(int(ExitCode.DELIVERY_FAILED))


COMMANDS: list[click.Command] = [ab]
