"""``flask webhooks`` commands for the local loop: send, tunnel."""

from __future__ import annotations

import os
import time
from typing import Any

import click
from flask import current_app

from ..receiver import EXTENSION_KEY
from ..redact import hide_passwords
from ..untrusted import printable
from .group import (
    api_client,
    one_line_errors,
    receiver_named,
    receiver_option,
    webhooks_cli,
)


@webhooks_cli.command("send")
@click.argument("trigger")
@click.option("--to", "url", help="Deliver to this URL instead of the app itself (in this process).")
@click.option("--data", "data_file", metavar="FILE", help="A JSON file with the resource (default: a sample).")
@click.option("--attempt", default=1, show_default=True, type=click.IntRange(min=1), help="The attempt to claim.")
@receiver_option
@one_line_errors
def send_command(trigger: str, url: str | None, data_file: str | None, attempt: int, receiver_name: str | None) -> None:
    """Send a sample TRIGGER event with the app's secret and print the answer."""
    from ..local.console import check_trigger, deliver_to_url, read_data, report
    from ..wire import make_event, signed

    receiver = receiver_named(receiver_name)
    body = make_event(check_trigger(trigger), read_data(data_file), attempt=attempt)
    # An app that opted out of the secret (local experiments) is sent none.
    secret = receiver.secret_key() if receiver.get_config().verifier is not None else None
    if url:
        deliver_to_url(url, body, secret)
    else:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        path = receiver.get_config().url
        data, headers = signed(body, secret=secret, url=path)
        answer = app.test_client().post(path, data=data, headers=headers)
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
        " PATH, or give --public-url of a tunnel you run"
    )


def _exit_with_parent() -> None:
    """In the reloader's child: stop when the parent (which owns the tunnel) is gone."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _start_background_workers(app: Any) -> None:
    """This process serves the app: start the background workers a ``flask`` command does not start."""
    for config in app.extensions.get(EXTENSION_KEY, {}).values():
        config.dispatcher.start()


@webhooks_cli.command("tunnel")
@click.option(
    "--provider",
    type=click.Choice(["ngrok", "cloudflared", "url", "loopback"]),
    help="ngrok (pyngrok), cloudflared, url (with --public-url) or loopback (local tests).",
)
@click.option("--public-url", help="The public URL of a tunnel you run yourself.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the app listens, behind the tunnel.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=5000,
    show_default=True,
    help="The app's port, which the tunnel forwards to.",
)
@click.option("--reload/--no-reload", default=False, show_default=True, help="Restart the app when code changes.")
@receiver_option
@one_line_errors
def tunnel_command(
    provider: str | None, public_url: str | None, host: str, port: int, reload: bool, receiver_name: str | None
) -> None:
    """Serve the app through a public URL, with a temporary integration upstream.

    Opens the tunnel, registers an integration observing the app's events
    with a fresh secret the app accepts for this session, runs the app, and
    deletes the integration on exit (Ctrl-C, SIGTERM or an error).
    """
    import secrets
    import signal

    from werkzeug.serving import run_simple

    from ..local.tunnel import open_tunnel
    from ..upstream.sync import default_integration_name, sync_integration

    if public_url and provider not in (None, "url"):
        raise click.UsageError("--public-url is the url provider's: give --provider url, or leave out --public-url")
    receiver = receiver_named(receiver_name)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true" and os.environ.get(TUNNEL_SECRET_ENV):
        # The reloader's child: the parent owns the tunnel and the integration.
        receiver.accept_session_secret(app, os.environ[TUNNEL_SECRET_ENV])
        _exit_with_parent()
        _start_background_workers(app)
        run_simple(host, port, app, use_reloader=True, threaded=True)
        return

    client = api_client()
    secret = secrets.token_urlsafe(32)
    os.environ[TUNNEL_SECRET_ENV] = secret
    receiver.accept_session_secret(app, secret)
    tunnel = open_tunnel(provider or _default_provider(public_url), port, public_url=public_url)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    integration_ids: list[str] = []
    try:
        url = tunnel.public_url + receiver.get_config().url
        name = f"{default_integration_name(receiver)}-tunnel-{secrets.token_hex(3)}"
        result = sync_integration(client, receiver, url, name=name, secret_key=secret)
        integration_ids = [str(i.get("id")) for i in result.integrations if i]
        click.echo(f"Public URL: {printable(hide_passwords(url))}")
        click.echo(
            f"Temporary integration {name!r} ({', '.join(integration_ids)}) observes: {', '.join(receiver.observes())}"
        )
        click.echo("Deliveries from the store now reach this app. Ctrl-C stops and deletes the integration.")
        if not reload:
            _start_background_workers(app)
        run_simple(host, port, app, use_reloader=reload, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            for integration_id in integration_ids:
                client.delete_integration(integration_id)
                click.echo(f"deleted temporary integration {integration_id}")
        finally:
            tunnel.close()
