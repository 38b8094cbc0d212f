"""`digest preflight`: check an edition the way inboxes will see it, before sending."""

from __future__ import annotations

import json

import click

from digest.cli import Env, pass_env
from digest.config import secret
from digest.editions import Edition
from digest.errors import NotFoundError, PreflightError
from digest.preflight import Report, dns_lookup, run_preflight


def print_report(report: Report, *, as_json: bool = False, quiet_ok: bool = False) -> None:
    """Findings one per line (errors and warnings on stderr when `quiet_ok`)."""
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    for finding in report.findings:
        if quiet_ok and finding.level in ("ok", "skipped") and finding.check != "dns":
            continue
        click.echo(finding.line(), err=quiet_ok)


@click.command("preflight")
@click.argument("digest")
@click.option("--week", required=True, metavar="W", help="ISO week of the edition, e.g. 2026-W05.")
@click.option("--no-dns", is_flag=True, help="Skip the SPF, DMARC and DKIM record lookups.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@pass_env
def preflight_command(env: Env, digest: str, week: str, no_dns: bool, as_json: bool) -> None:
    """Check subject, size, links, images, placeholders, headers, DKIM and DNS of an edition.

    Errors exit with code 6 (`digest send` runs the same checks and stops on an error);
    warnings are printed. DNS checks are skipped, and say so, when DNS does not answer.

    \b
    Example:
      digest preflight weekly --week 2026-W05
    """
    env.config.digest(digest)
    edition = env.store.editions.get(f"{digest}/{week}")
    if edition is None:
        raise NotFoundError(
            f"no edition {digest}/{week}", hint=f"digest build {digest} --week {week}"
        )
    report = run_preflight(
        env.config,
        edition,
        secret=secret(),
        dns=None if no_dns else dns_lookup(),
        now=env.now(),
    )
    print_report(report, as_json=as_json)
    if not report.ok:
        raise PreflightError(f"preflight: {len(report.errors)} errors in {edition.key}")


COMMANDS: list[click.Command] = [preflight_command]


def preflight_before_send(env: Env, edition: Edition, *, skip: bool) -> None:
    """The checks `digest send` runs first (DNS aside): warnings on stderr, errors stop it."""
    if skip:
        return
    report = run_preflight(env.config, edition, secret=secret(), dns=None, now=env.now())
    print_report(report, quiet_ok=True)
    if not report.ok:
        raise PreflightError(
            f"preflight: {len(report.errors)} errors in {edition.key}; nothing was sent",
            hint=f"digest preflight {edition.digest} --week {edition.period}",
        )
