"""The ``flask webhooks`` command group, added to each app by ``init_app``.

Credentials come from ``MOLTIN_CLIENT_ID``, ``MOLTIN_CLIENT_SECRET`` and
``MOLTIN_API_URL``, in the app's config or the environment. Every failure is
one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import functools
import json
import os
import time
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

import click
from flask import current_app
from flask.cli import AppGroup

from .catalogue import is_known
from .dispatch.run import process_stored
from .errors import WebhookReceiverError
from .moltin import DEFAULT_BASE_URL, MoltinClient
from .receiver import RECEIVERS_KEY, WebhookReceiver
from .stores.base import EventStatus

__all__ = ["webhooks_cli"]

F = TypeVar("F", bound=Callable[..., Any])

webhooks_cli = AppGroup("webhooks", help="Moltin webhooks: register the integration, inspect it, list routes.")


def _setting(name: str) -> str | None:
    value = current_app.config.get(name) or os.environ.get(name)
    return str(value) if value else None


def _client() -> MoltinClient:
    client_id = _setting("MOLTIN_CLIENT_ID")
    client_secret = _setting("MOLTIN_CLIENT_SECRET")
    if not client_id or not client_secret:
        raise click.ClickException(
            "set MOLTIN_CLIENT_ID and MOLTIN_CLIENT_SECRET (in the app config or the environment),"
            " and MOLTIN_API_URL for an Elastic Path host")
    return MoltinClient(client_id, client_secret, base_url=_setting("MOLTIN_API_URL") or DEFAULT_BASE_URL)


def _receiver(name: str | None) -> WebhookReceiver:
    receivers: dict[str, WebhookReceiver] = current_app.extensions.get(RECEIVERS_KEY, {})
    if name is None:
        if len(receivers) == 1:
            return next(iter(receivers.values()))
        name = "moltin"
    try:
        return receivers[name]
    except KeyError:
        known = ", ".join(sorted(receivers)) or "none"
        raise click.ClickException(f"no receiver named {name!r} on this app (receivers: {known})") from None


def _one_line_errors(fn: F) -> F:
    """Turn library errors into one clear line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (WebhookReceiverError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


receiver_option = click.option("--receiver", "receiver_name", metavar="NAME",
                               help="Which receiver, when the app has several.")


@webhooks_cli.command("sync")
@click.option("--url", required=True, help="The public URL of the webhook endpoint.")
@click.option("--name", help="The integration's name (default: webhook_receiver-<receiver>).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--disabled", is_flag=True, help="Create or leave the integration disabled.")
@receiver_option
@_one_line_errors
def sync_command(url: str, name: str | None, dry_run: bool, disabled: bool, receiver_name: str | None) -> None:
    """Create or update the integration so that it matches the app's handlers."""
    from .sync import sync_integration

    receiver = _receiver(receiver_name)
    result = sync_integration(_client(), receiver, url, name=name, secret_key=receiver.secret_key(),
                              enabled=not disabled, dry_run=dry_run)
    click.echo(str(result))


@webhooks_cli.command("list")
@_one_line_errors
def list_command() -> None:
    """List the store's integrations."""
    integrations = _client().list_integrations()
    if not integrations:
        click.echo("no integrations")
    for i in integrations:
        state = "enabled" if i.get("enabled") else "disabled"
        url = (i.get("configuration") or {}).get("url", "")
        click.echo(f"{i.get('id')}  {i.get('name')!r}  {i.get('integration_type')}  {state}  {url}")
        click.echo(f"    observes: {', '.join(i.get('observes') or []) or '(nothing)'}")


@webhooks_cli.command("delete")
@click.argument("integration_id", required=False)
@click.option("--name", help="Delete the integration with this name instead.")
@_one_line_errors
def delete_command(integration_id: str | None, name: str | None) -> None:
    """Delete an integration, by ID or by --name."""
    if bool(integration_id) == bool(name):
        raise click.UsageError("give an integration ID or --name NAME (one of them)")
    client = _client()
    if name:
        matches = [i for i in client.list_integrations() if i.get("name") == name]
        if len(matches) != 1:
            raise click.ClickException(f"{len(matches)} integrations are named {name!r}; delete by ID")
        integration_id = str(matches[0]["id"])
    assert integration_id is not None
    client.delete_integration(integration_id)
    click.echo(f"deleted integration {integration_id}")


@webhooks_cli.command("logs")
@click.argument("integration_id", required=False)
@click.option("--failed", is_flag=True, help="Only the deliveries that failed.")
@_one_line_errors
def logs_command(integration_id: str | None, failed: bool) -> None:
    """Show delivery logs, newest first: of one integration, or of all."""
    logs = _client().integration_logs(integration_id)
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
@_one_line_errors
def routes_command(receiver_name: str | None) -> None:
    """Show which handlers run for which trigger."""
    receiver = _receiver(receiver_name)
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
@_one_line_errors
def secret_command(receiver_name: str | None) -> None:
    """Print the secret to register upstream (keep it out of logs and shells' history)."""
    secret = _receiver(receiver_name).secret_key()
    click.echo("warning: this is the webhook secret; do not paste it anywhere public.", err=True)
    click.echo(secret)


# -- operations on the event store ------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` in seconds."""
    number, unit = text[:-1], text[-1:].lower()
    if unit not in _UNITS or not number.replace(".", "", 1).isdigit():
        raise click.BadParameter(f"{text!r} is not a duration such as 30d, 12h or 90m")
    return float(number) * _UNITS[unit]


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@webhooks_cli.command("events")
@click.option("--status", type=click.Choice([s.value for s in EventStatus]), help="Only events with this status.")
@click.option("--trigger", help="Only events with this trigger.")
@click.option("--since", help="Only events received within this long, such as 2h or 7d.")
@click.option("--limit", default=50, show_default=True, help="At most this many.")
@receiver_option
@_one_line_errors
def events_command(status: str | None, trigger: str | None, since: str | None, limit: int,
                   receiver_name: str | None) -> None:
    """List stored events, newest first."""
    store = _receiver(receiver_name).get_store()
    found = store.events(status=EventStatus(status) if status else None, trigger=trigger,
                         since=time.time() - _duration(since) if since else None, limit=limit)
    if not found:
        click.echo("no events")
    for stored in found:
        ok = sum(o.ok for o in stored.handlers.values())
        click.echo(f"{_when(stored.received_at)}  {stored.id}  {stored.trigger:<20} {stored.status.value:<10}"
                   f"  handlers ok {ok}/{len(stored.handlers)}")


@webhooks_cli.command("show")
@click.argument("event_id")
@receiver_option
@_one_line_errors
def show_command(event_id: str, receiver_name: str | None) -> None:
    """Show one stored event (redacted) and each handler's outcome."""
    stored = _receiver(receiver_name).get_store().get(event_id)
    if stored is None:
        raise click.ClickException(f"no stored event {event_id!r}")
    click.echo(f"event {stored.id}  {stored.trigger}  {stored.status.value}")
    click.echo(f"received {_when(stored.received_at)}, updated {_when(stored.updated_at)}")
    for outcome in stored.handlers.values():
        state = "ok" if outcome.ok else f"FAILED: {outcome.error}"
        click.echo(f"  {outcome.name}: {state} (runs: {outcome.attempts}, last {_when(outcome.finished_at)})")
    click.echo(json.dumps(stored.raw, indent=2, sort_keys=True))


@webhooks_cli.command("replay")
@click.argument("event_id", required=False)
@click.option("--failed", "all_failed", is_flag=True,
              help="Every failed event, and every event left pending or processing past its lease.")
@receiver_option
@_one_line_errors
def replay_command(event_id: str | None, all_failed: bool, receiver_name: str | None) -> None:
    """Run again the handlers that did not succeed, here and now."""
    if bool(event_id) == all_failed:
        raise click.UsageError("give an event ID or --failed (one of them)")
    receiver = _receiver(receiver_name)
    store = receiver.get_store()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if event_id:
        ids = [event_id]
    else:
        stale = time.time() - store.lease_seconds
        ids = [e.id for e in store.events(status=EventStatus.FAILED)]
        ids += [e.id for status in (EventStatus.PENDING, EventStatus.PROCESSING)
                for e in store.events(status=status) if e.updated_at < stale]
    counts: dict[str, int] = {}
    with click.progressbar(ids, label=f"replaying {len(ids)} event{'s' if len(ids) != 1 else ''}",
                           show_pos=True) as bar:
        for one in bar:
            result = process_stored(app, receiver, store, one)
            counts[result.state] = counts.get(result.state, 0) + 1
            if event_id and result.state == "missing":
                raise click.ClickException(f"no stored event {one!r}")
            if event_id and result.state == "failed":
                raise click.ClickException(f"event {one}: still failing: {', '.join(result.failed)}")
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "nothing to replay"
    click.echo(summary)


@webhooks_cli.command("prune")
@click.option("--older-than", "older_than", required=True, help="Such as 30d: forget finished events older than that.")
@receiver_option
@_one_line_errors
def prune_command(older_than: str, receiver_name: str | None) -> None:
    """Forget processed and failed events received before a given age (pending ones are kept)."""
    pruned = _receiver(receiver_name).get_store().prune(time.time() - _duration(older_than))
    click.echo(f"pruned {pruned} event{'s' if pruned != 1 else ''}")


@webhooks_cli.command("send")
@click.argument("trigger")
@click.option("--to", "url", help="Deliver to this URL instead of the app itself (in this process).")
@click.option("--data", "data_file", metavar="FILE", help="A JSON file with the resource (default: a sample).")
@click.option("--attempt", default=1, show_default=True, type=click.IntRange(min=1), help="The attempt to claim.")
@receiver_option
@_one_line_errors
def send_command(trigger: str, url: str | None, data_file: str | None, attempt: int,
                 receiver_name: str | None) -> None:
    """Send a sample TRIGGER event with the app's secret and print the answer."""
    from .console import read_data, report
    from .testing import deliver, make_event

    receiver = _receiver(receiver_name)
    body = make_event(trigger, read_data(data_file), attempt=attempt)
    if url:
        import requests

        try:
            answer = deliver(url, body, secret=receiver.secret_key())
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot deliver to {url}: {type(exc).__name__}") from None
        report(answer.status_code, answer.text)
    else:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        answer = deliver(app.test_client(), body, secret=receiver.secret_key(), path=receiver.get_config().url)
        report(answer.status_code, answer.get_data(as_text=True))


#: How the tunnel command hands its session secret to the reloader's child process.
TUNNEL_SECRET_ENV = "WEBHOOK_RECEIVER_TUNNEL_SECRET"


def _default_provider(public_url: str | None) -> str:
    import importlib.util
    import shutil

    if public_url:
        return "url"
    if importlib.util.find_spec("pyngrok") is not None:
        return "ngrok"
    if shutil.which("cloudflared"):
        return "cloudflared"
    raise click.ClickException(
        "no tunnel provider: pip install 'webhook_receiver[tunnel]' (ngrok), put cloudflared on the"
        " PATH, or give --public-url of a tunnel you run")


def _exit_with_parent() -> None:
    """In the reloader's child: stop when the parent (which owns the tunnel) is gone."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


@webhooks_cli.command("tunnel")
@click.option("--provider", type=click.Choice(["ngrok", "cloudflared", "url", "loopback"]),
              help="ngrok (pyngrok), cloudflared, url (with --public-url) or loopback (local tests).")
@click.option("--public-url", help="The public URL of a tunnel you run yourself.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--reload/--no-reload", default=False, show_default=True, help="Restart the app when code changes.")
@receiver_option
@_one_line_errors
def tunnel_command(provider: str | None, public_url: str | None, host: str, port: int, reload: bool,
                   receiver_name: str | None) -> None:
    """Serve the app through a public URL, with a temporary integration upstream.

    Opens the tunnel, registers an integration observing the app's events
    with a fresh secret the app accepts for this session, runs the app, and
    deletes the integration on exit (Ctrl-C, SIGTERM or an error).
    """
    import secrets
    import signal

    from werkzeug.serving import run_simple

    from .sync import default_integration_name, sync_integration
    from .tunnel import open_tunnel

    receiver = _receiver(receiver_name)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true" and os.environ.get(TUNNEL_SECRET_ENV):
        # The reloader's child: the parent owns the tunnel and the integration.
        receiver.accept_session_secret(app, os.environ[TUNNEL_SECRET_ENV])
        _exit_with_parent()
        run_simple(host, port, app, use_reloader=True, threaded=True)
        return

    client = _client()
    secret = secrets.token_urlsafe(32)
    os.environ[TUNNEL_SECRET_ENV] = secret
    receiver.accept_session_secret(app, secret)
    tunnel = open_tunnel(provider or _default_provider(public_url), port, public_url=public_url)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    integration_id: str | None = None
    try:
        url = tunnel.public_url + receiver.get_config().url
        name = f"{default_integration_name(receiver)}-tunnel-{secrets.token_hex(3)}"
        result = sync_integration(client, receiver, url, name=name, secret_key=secret)
        integration_id = str((result.integration or {}).get("id"))
        click.echo(f"Public URL: {url}")
        click.echo(f"Temporary integration {name!r} ({integration_id}) observes: {', '.join(receiver.observes())}")
        click.echo("Deliveries from the store now reach this app. Ctrl-C stops and deletes the integration.")
        run_simple(host, port, app, use_reloader=reload, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            if integration_id:
                client.delete_integration(integration_id)
                click.echo(f"deleted temporary integration {integration_id}")
        finally:
            tunnel.close()
