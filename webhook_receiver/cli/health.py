"""``flask webhooks health``: the store answers, the backlog is under its limit and young enough."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import click
from flask import current_app
from flask.cli import ScriptInfo

from ..observability.setup import MAX_HEALTH_TIMEOUT, health_of
from ..redact import hide_passwords
from ..untrusted import printable
from .group import json_option, one_line_errors, receiver_named, receiver_option, say, webhooks_cli

#: The exit status when the check could not be made (the app did not load, an unknown --receiver, a usage
#: error): neither 1 (degraded) nor 2 (down), so that a probe never reads a mistake as a state of the store.
NOT_CHECKED = 3


def _exiting_not_checked(error: click.ClickException) -> click.ClickException:
    """*error*, exiting :data:`NOT_CHECKED` when shown (click reads the status from the instance)."""
    error.exit_code = NOT_CHECKED  # type: ignore[misc]  # click declares it on the class, and reads it per instance
    return error


class _HealthCommand(click.Command):
    """A command whose usage errors exit :data:`NOT_CHECKED` rather than click's 2, which here means down."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _exiting_not_checked(exc) from None


@webhooks_cli.command("health", cls=_HealthCommand, with_appcontext=False)
@json_option
@receiver_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=MAX_HEALTH_TIMEOUT),
    default=None,
    callback=lambda ctx, param, value: _a_number(value),
    help="Seconds to wait for the stores before one that has not answered is down"
    " (WEBHOOK_RECEIVER_HEALTH_TIMEOUT, 3 by default).",
)
@click.pass_context
def health_command(ctx: click.Context, as_json: bool, receiver_name: str | None, timeout: float | None) -> None:
    """Check the store, the backlog and the oldest due event: exit 0 healthy, 1 degraded, 2 down.

    Every receiver of the app is checked unless --receiver names one. The
    workers are not checked: this command runs none (the readiness endpoint,
    WEBHOOK_RECEIVER_HEALTH_URL, checks those of the process that answers).
    A store that has not answered within --timeout seconds is down.
    Exit 3 when no check could be made: the app did not load, no receiver is
    set up, or --receiver names none of them (with --json, a document whose
    status is not_checked), and when interrupted (Ctrl-C) before it answers.
    """
    try:
        try:
            app = ctx.ensure_object(ScriptInfo).load_app()
        except (Exception, SystemExit) as exc:  # whatever the factory raised or exited with: nothing was checked
            _not_checked(as_json, f"the app did not load: {type(exc).__name__}: {exc}")
        with app.app_context():
            try:
                _check(as_json, receiver_name, timeout)
            except click.ClickException as exc:
                _not_checked(as_json, exc.message)
    except KeyboardInterrupt:  # click would say "Aborted!" and exit 1, which here means degraded
        _not_checked(as_json, "interrupted before the check was made")


def _a_number(value: float | None) -> float | None:
    """*value*, unless it is NaN (which click's range lets through: every comparison with it is false)."""
    if value is not None and value != value:
        raise click.BadParameter("nan is not a number of seconds")
    return value


def _not_checked(as_json: bool, reason: str) -> NoReturn:
    """Say why nothing was checked (a URL's password hidden: a factory's error may quote a DSN), and exit 3."""
    reason = printable(hide_passwords(reason))
    if as_json:
        click.echo(json.dumps({"status": "not_checked", "error": reason}, indent=2))
    raise _exiting_not_checked(click.ClickException(reason))


@one_line_errors
def _check(as_json: bool, receiver_name: str | None, timeout: float | None) -> None:
    names = None if receiver_name is None else [receiver_named(receiver_name).name]
    report = health_of(current_app, names, workers=False, timeout=timeout)
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
