"""``flask webhooks`` commands that talk to upstream: sync, list, delete, logs; and routes, secret."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import click
from flask import current_app

from ..catalogue import is_known, is_legacy
from ..events import REDACTED, redact
from ..redact import hide_passwords
from ..untrusted import printable
from ..upstream.sync import MANAGED_MARK, is_sync_lock
from .group import (
    LIMIT,
    api_client,
    json_option,
    one_line_errors,
    receiver_named,
    receiver_option,
    say,
    setting,
    webhooks_cli,
)


@webhooks_cli.command("sync")
@click.option("--url", help="The public URL of the endpoint, ending in the receiver's path (/webhooks/moltin).")
@click.option(
    "--stomp",
    "stomp_urls",
    multiple=True,
    metavar="URL",
    help="Register stomp integrations instead, delivering to this broker: stomp+ssl://USER@HOST:61614/queue/NAME"
    " (repeat for each address of an active/standby pair). The password comes from the URL or"
    " WEBHOOK_RECEIVER_STOMP_PASSWORD.",
)
@click.option(
    "--sqs",
    "sqs_url",
    metavar="QUEUE_URL",
    help="Register aws_sqs integrations instead, delivering to this queue (https://sqs.REGION.amazonaws.com/"
    "ACCOUNT/epcc-NAME), with the keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (app config or environment).",
)
@click.option("--region", help="The SQS queue's region, when its URL does not say.")
@click.option("--name", help="The integration's name (default: webhook_receiver-<receiver>, with -stomp or -sqs).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--disabled", is_flag=True, help="Create or leave the integration disabled.")
@click.option("--force", is_flag=True, help="Register a URL whose path is not the receiver's (a proxy rewrites it).")
@receiver_option
@one_line_errors
def sync_command(
    url: str | None,
    stomp_urls: tuple[str, ...],
    sqs_url: str | None,
    region: str | None,
    name: str | None,
    dry_run: bool,
    disabled: bool,
    force: bool,
    receiver_name: str | None,
) -> None:
    """Create or update the integrations so that they match the app's handlers.

    A webhook (--url), or a queue that `flask webhooks consume` reads: a STOMP
    broker (--stomp) or an SQS queue (--sqs). Each kind is a group of its own,
    five events per integration. Two syncs at once take turns: a sync that
    writes holds a lock upstream, a disabled integration named NAME.sync-lock
    that it deletes when done (one left by a sync that died is ignored after
    two minutes). A new member of the group skips names other integrations
    already have.
    """
    from ..upstream.sync import sync_integration, sync_target
    from ..upstream.targets import sqs_target, stomp_target

    receiver = receiver_named(receiver_name)
    given = [flag for flag, value in (("--url", url), ("--stomp", stomp_urls), ("--sqs", sqs_url)) if value]
    if len(given) > 1:
        raise click.UsageError(f"give one of --url, --stomp, --sqs (not {' and '.join(given)}): one group per sync")
    if region and not sqs_url:
        raise click.UsageError("--region is the SQS queue's: give it with --sqs")
    if force and not url:
        raise click.UsageError("--force lets --url's path differ from the receiver's: give it with --url only")
    if stomp_urls or sqs_url:
        if stomp_urls:
            target = stomp_target(stomp_urls)
        else:
            assert sqs_url is not None
            target = sqs_target(
                sqs_url,
                region=region,
                access_key_id=setting("AWS_ACCESS_KEY_ID"),
                secret_access_key=setting("AWS_SECRET_ACCESS_KEY"),
            )
        result = sync_target(api_client(), receiver, target, name=name, enabled=not disabled, dry_run=dry_run)
    else:
        check_url(url, receiver.get_config().url, force=force)
        assert url is not None
        result = sync_integration(
            api_client(),
            receiver,
            url,
            name=name,
            secret_key=receiver.secret_key(),
            enabled=not disabled,
            dry_run=dry_run,
        )
    for line in result.lines():
        say(line)


def check_url(url: str | None, mount: str, *, force: bool) -> None:
    """Refuse a URL upstream could not deliver to this receiver at, saying the one to give.

    :param mount: the receiver's path on the app, such as ``/webhooks/moltin``.
    :param force: accept any path (a proxy in front of the app rewrites it).
    """
    example = f"--url https://shop.example.com{mount}"
    if not url:
        raise click.UsageError(f"give the endpoint's public URL, such as {example}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.UsageError(
            f"--url must be an http(s) URL with a host, such as {example}, not {printable(hide_passwords(repr(url)))}"
        )
    if not force and parts.path.rstrip("/") != mount.rstrip("/"):
        raise click.UsageError(
            f"the receiver is mounted at {mount}, but --url ends in {parts.path or '/'!r}: upstream would deliver"
            f" where nothing listens. Give {hide_passwords(f'{parts.scheme}://{parts.netloc}{mount}')}, or add --force"
            " if a proxy rewrites the path"
        )


@webhooks_cli.command("list")
@json_option
@one_line_errors
def list_command(as_json: bool) -> None:
    """List the store's integrations."""
    integrations = api_client().list_integrations()
    if as_json:
        click.echo(hide_passwords(json.dumps([_shown(i) for i in integrations], indent=2)))  # webhook URL logins
        return
    if not integrations:
        say("no integrations")
    for i in integrations:
        state = "enabled" if i.get("enabled") else "disabled"
        url = _delivers_to(i)
        managed = str(i.get("description") or "").startswith(MANAGED_MARK)
        group = f"  [sync group {re.sub(r'-[0-9]+$', '', str(i.get('name')))!r}]" if managed else ""
        if is_sync_lock(i):
            group = "  [the lock of a sync under way]"
        say(f"{i.get('id')}  {i.get('name')!r}  {i.get('integration_type')}  {state}  {url}{group}")
        say(f"    observes: {', '.join(i.get('observes') or []) or '(nothing)'}")


def _shown(integration: dict[str, Any]) -> Any:
    """An integration for output: every secret redacted, an SQS integration's key id too."""
    clean = redact(integration)[0]
    held = clean.get("configuration") if isinstance(clean, dict) else None
    if isinstance(held, dict) and "aws_access_key_id" in held:
        held = {**held, "aws_access_key_id": REDACTED}
    if isinstance(held, dict) and isinstance(held.get("addresses"), list):
        held = {**held, "addresses": [hide_passwords(str(a)) for a in held["addresses"]]}
    return {**clean, "configuration": held} if isinstance(held, dict) else clean


def _delivers_to(integration: dict[str, Any]) -> str:
    """Where an integration delivers: a webhook's or a queue's URL, a STOMP destination on its addresses."""
    held = integration.get("configuration") or {}
    if not isinstance(held, dict):
        return ""
    if integration.get("integration_type") == "stomp":
        addresses = held.get("addresses") or []
        where = ", ".join(str(a) for a in addresses) if isinstance(addresses, list) else str(addresses)
        return hide_passwords(f"{held.get('destination', '?')} on {where or '?'}")
    return hide_passwords(str(held.get("url", "")))


@webhooks_cli.command("delete")
@click.argument("integration_id", required=False)
@click.option(
    "--name",
    help="Delete the integration with this name instead, with the rest of its sync group (NAME-2, NAME-3, ...).",
)
@one_line_errors
def delete_command(integration_id: str | None, name: str | None) -> None:
    """Delete an integration, by ID or by --name (a sync group whole)."""
    from ..upstream.sync import group_members

    if bool(integration_id) == bool(name):
        raise click.UsageError("give an integration ID or --name NAME (one of them)")
    client = api_client()
    if integration_id:
        client.delete_integration(integration_id)
        say(f"deleted integration {integration_id}")
        return
    assert name is not None
    integrations = client.list_integrations()
    kinds = {i.get("integration_type") for i in integrations if i.get("name") == name}
    kind = str(kinds.pop()) if len(kinds) == 1 else "webhook"
    members = group_members(integrations, name, kind) or [i for i in integrations if i.get("name") == name]
    named = [i for i in members if i.get("name") == name]
    if not members:
        raise click.ClickException(f"no integration is named {name!r}; `flask webhooks list` shows them")
    if len(named) > 1:
        ids = ", ".join(str(i.get("id")) for i in named)
        raise click.ClickException(f"{len(named)} integrations are named {name!r} ({ids}); delete them by ID")
    for member in members:
        client.delete_integration(str(member["id"]))
        say(f"deleted integration {member['id']} ({member.get('name')!r})")


@webhooks_cli.command("logs")
@click.argument("integration_id", required=False)
@click.option("--failed", is_flag=True, help="Only the deliveries that failed.")
@click.option("--limit", type=LIMIT, default=50, show_default=True, help="At most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@receiver_option
@one_line_errors
def logs_command(
    integration_id: str | None, failed: bool, limit: int, as_json: bool, receiver_name: str | None
) -> None:
    """Show delivery attempts, newest first, with the event each delivered and its status here.

    Upstream's log holds the answer the receiver gave, which names the event;
    its trigger and status come from this app's event store.
    """
    client = api_client()
    logs = client.integration_logs(integration_id)
    if failed:
        logs = [log for log in logs if not log.get("succeeded")]
    logs = sorted(logs, key=_created_at, reverse=True)[:limit]
    names = {str(i.get("id")): str(i.get("name")) for i in client.list_integrations()}
    store = receiver_named(receiver_name).get_store()
    rows = [_log_row(log, names, store) for log in logs]
    if as_json:
        click.echo(hide_passwords(json.dumps(rows, indent=2)))  # upstream's error_detail quotes the URL
        return
    if not rows:
        say("no logs")
    for row in rows:
        outcome = "ok    " if row["succeeded"] else "FAILED"
        http = row["status_code"] if row["status_code"] is not None else "-"
        line = (
            f"{row['created_at']}  {outcome}  attempt {row['attempt']}  http {http}"
            f"  {row['trigger'] or '?'}  {row['event_id'] or '?'}  {row['integration']!r}"
            f"  here: {row['stored_status'] or 'not stored'}  {row['error_detail'] or ''}"
        )
        say(line.rstrip())


def _created_at(log: dict[str, Any]) -> str:
    return str(((log.get("meta") or {}).get("timestamps") or {}).get("created_at", ""))


def _log_row(log: dict[str, Any], names: dict[str, str], store: Any) -> dict[str, Any]:
    """One delivery attempt: upstream's log, the event our answer named, and its status here."""
    event_id = None
    try:
        answer = json.loads(log.get("body") or "")
        if isinstance(answer, dict) and isinstance(answer.get("id"), str):
            event_id = answer["id"]
    except ValueError:
        pass
    stored = store.get(event_id) if event_id else None
    integration = (((log.get("relationships") or {}).get("integration") or {}).get("data") or {}).get("id")
    return {
        "created_at": _created_at(log),
        "succeeded": bool(log.get("succeeded")),
        "attempt": log.get("attempt"),
        "status_code": log.get("status_code"),
        "error_detail": log.get("error_detail"),
        "integration_id": integration,
        "integration": names.get(str(integration), "?"),
        "event_id": event_id,
        "trigger": stored.trigger if stored else None,
        "stored_status": stored.status.value if stored else None,
    }


@webhooks_cli.command("routes")
@json_option
@receiver_option
@one_line_errors
def routes_command(as_json: bool, receiver_name: str | None) -> None:
    """Show which handlers run for which trigger."""
    receiver = receiver_named(receiver_name)
    observes = receiver.observes()
    if as_json:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        click.echo(
            json.dumps(
                {trigger: [h.name for h in receiver.handlers_for(trigger, app)] for trigger in observes}, indent=2
            )
        )
        return
    if not observes:
        say("no handlers")
    width = max((len(t) for t in observes), default=0)
    for trigger in observes:
        names = ", ".join(h.name for h in receiver.handlers_for(trigger, current_app._get_current_object()))  # type: ignore[attr-defined]
        flag = "  (legacy)" if is_legacy(trigger) else "" if is_known(trigger) else "  (not in the catalogue)"
        say(f"{trigger:<{width}}  ->  {names}{flag}")


@webhooks_cli.command("secret")
@receiver_option
@one_line_errors
def secret_command(receiver_name: str | None) -> None:
    """Print the secret to register upstream (keep it out of logs and shells' history)."""
    secret = receiver_named(receiver_name).secret_key()
    click.echo("warning: this is the webhook secret; do not paste it anywhere public.", err=True)
    click.echo(secret)
