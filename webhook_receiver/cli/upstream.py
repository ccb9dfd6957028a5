"""``flask webhooks`` commands that talk to upstream: sync, list, delete, logs; and routes, secret."""
from __future__ import annotations

import re

import click
from flask import current_app

from ..catalogue import is_known
from ..sync import MANAGED_MARK
from .group import api_client, one_line_errors, receiver_named, receiver_option, webhooks_cli

@webhooks_cli.command("sync")
@click.option("--url", required=True, help="The public URL of the webhook endpoint.")
@click.option("--name", help="The integration's name (default: webhook_receiver-<receiver>).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--disabled", is_flag=True, help="Create or leave the integration disabled.")
@receiver_option
@one_line_errors
def sync_command(url: str, name: str | None, dry_run: bool, disabled: bool, receiver_name: str | None) -> None:
    """Create or update the integration so that it matches the app's handlers."""
    from ..sync import sync_integration

    receiver = receiver_named(receiver_name)
    result = sync_integration(api_client(), receiver, url, name=name, secret_key=receiver.secret_key(),
                              enabled=not disabled, dry_run=dry_run)
    click.echo(str(result))


@webhooks_cli.command("list")
@one_line_errors
def list_command() -> None:
    """List the store's integrations."""
    integrations = api_client().list_integrations()
    if not integrations:
        click.echo("no integrations")
    for i in integrations:
        state = "enabled" if i.get("enabled") else "disabled"
        url = (i.get("configuration") or {}).get("url", "")
        managed = str(i.get("description") or "").startswith(MANAGED_MARK)
        group = f"  [sync group {re.sub(r'-[0-9]+$', '', str(i.get('name')))!r}]" if managed else ""
        click.echo(f"{i.get('id')}  {i.get('name')!r}  {i.get('integration_type')}  {state}  {url}{group}")
        click.echo(f"    observes: {', '.join(i.get('observes') or []) or '(nothing)'}")


@webhooks_cli.command("delete")
@click.argument("integration_id", required=False)
@click.option("--name", help="Delete the integration with this name instead, with the rest of its sync group"
                             " (NAME-2, NAME-3, ...).")
@one_line_errors
def delete_command(integration_id: str | None, name: str | None) -> None:
    """Delete an integration, by ID or by --name (a sync group whole)."""
    from ..sync import group_members

    if bool(integration_id) == bool(name):
        raise click.UsageError("give an integration ID or --name NAME (one of them)")
    client = api_client()
    if integration_id:
        client.delete_integration(integration_id)
        click.echo(f"deleted integration {integration_id}")
        return
    assert name is not None
    integrations = client.list_integrations()
    members = group_members(integrations, name) or [i for i in integrations if i.get("name") == name]
    named = [i for i in members if i.get("name") == name]
    if not members:
        raise click.ClickException(f"no integration is named {name!r}; `flask webhooks list` shows them")
    if len(named) > 1:
        ids = ", ".join(str(i.get("id")) for i in named)
        raise click.ClickException(f"{len(named)} integrations are named {name!r} ({ids}); delete them by ID")
    for member in members:
        client.delete_integration(str(member["id"]))
        click.echo(f"deleted integration {member['id']} ({member.get('name')!r})")


@webhooks_cli.command("logs")
@click.argument("integration_id", required=False)
@click.option("--failed", is_flag=True, help="Only the deliveries that failed.")
@one_line_errors
def logs_command(integration_id: str | None, failed: bool) -> None:
    """Show delivery logs, newest first: of one integration, or of all."""
    logs = api_client().integration_logs(integration_id)
    if failed:
        logs = [log for log in logs if not log.get("succeeded")]
    if not logs:
        click.echo("no logs")
    for log in logs:
        outcome = "ok    " if log.get("succeeded") else "FAILED"
        when = ((log.get("meta") or {}).get("timestamps") or {}).get("created_at", "")
        detail = log.get("error_detail") or ""
        click.echo(f"{when}  {outcome}  attempt {log.get('attempt')}  status {log.get('status_code')}  {detail}".rstrip())


@webhooks_cli.command("routes")
@receiver_option
@one_line_errors
def routes_command(receiver_name: str | None) -> None:
    """Show which handlers run for which trigger."""
    receiver = receiver_named(receiver_name)
    observes = receiver.observes()
    if not observes:
        click.echo("no handlers")
    width = max((len(t) for t in observes), default=0)
    for trigger in observes:
        names = ", ".join(h.name for h in receiver.handlers_for(trigger, current_app._get_current_object()))  # type: ignore[attr-defined]
        flag = "" if is_known(trigger) else "  (not in the catalogue)"
        click.echo(f"{trigger:<{width}}  ->  {names}{flag}")


@webhooks_cli.command("secret")
@receiver_option
@one_line_errors
def secret_command(receiver_name: str | None) -> None:
    """Print the secret to register upstream (keep it out of logs and shells' history)."""
    secret = receiver_named(receiver_name).secret_key()
    click.echo("warning: this is the webhook secret; do not paste it anywhere public.", err=True)
    click.echo(secret)
