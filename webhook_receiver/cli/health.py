"""``flask webhooks health``: the store answers, the backlog is under its limit and young enough."""

from __future__ import annotations

import json

import click
from flask import current_app

from ..observability.setup import health_of
from .group import json_option, one_line_errors, receiver_named, receiver_option, say, webhooks_cli


@webhooks_cli.command("health")
@json_option
@receiver_option
@one_line_errors
def health_command(as_json: bool, receiver_name: str | None) -> None:
    """Check the store, the backlog and the oldest due event: exit 0 healthy, 1 degraded, 2 down.

    Every receiver of the app is checked unless --receiver names one. The
    workers are not checked: this command runs none (the readiness endpoint,
    WEBHOOK_RECEIVER_HEALTH_URL, checks those of the process that answers).
    """
    names = None if receiver_name is None else [receiver_named(receiver_name).name]
    report = health_of(current_app, names, workers=False)
    if not report.checks:
        raise click.ClickException("no receiver is set up on this app")
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        say(f"status: {report.status}")
        for name, checks in report.checks.items():
            say(f"receiver {name}:")
            width = max(len(check.name) for check in checks)
            for check in checks:
                say(f"  {check.name.ljust(width)}  {check.status.ljust(8)}  {check.detail}")
    raise SystemExit(report.exit_code)
