"""The ``webhook-receiver`` console script: what needs no Flask app."""
from __future__ import annotations

import logging

import click

from .emulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Emulator

__all__ = ["main"]


@click.group()
def main() -> None:
    """Tools for Moltin webhooks that need no Flask app."""


@main.command("emulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, help="Port to listen on.")
@click.option("--client-id", default=DEFAULT_CLIENT_ID, show_default=True,
              help="The client id the token endpoint accepts.")
@click.option("--client-secret", default=DEFAULT_CLIENT_SECRET, show_default=True,
              help="The client secret the token endpoint accepts.")
@click.option("--retry-delays", default="1,2,4,8", show_default=True,
              help="Seconds before each delivery retry, comma-separated.")
def emulate(host: str, port: int, client_id: str, client_secret: str, retry_delays: str) -> None:
    """Run a local stand-in for the Moltin API that really delivers webhooks.

    Point MOLTIN_API_URL at it, sync an integration, then fire events with
    POST /emulator/fire {"trigger": "order.paid"}.
    """
    try:
        delays = [float(d) for d in retry_delays.split(",") if d.strip()]
    except ValueError:
        raise click.BadParameter("use numbers separated by commas, such as 1,2,4", param_hint="--retry-delays") from None
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    emulator = Emulator(client_id=client_id, client_secret=client_secret, host=host, port=port,
                        retry_delays=delays, quiet=False)
    click.echo(f"Moltin emulator on http://{host}:{port}  (client id {client_id!r}; Ctrl-C to stop)")
    click.echo(f"  export MOLTIN_API_URL=http://{host}:{port} MOLTIN_CLIENT_ID={client_id}"
               " MOLTIN_CLIENT_SECRET=...")
    try:
        emulator.serve_forever()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    except KeyboardInterrupt:
        click.echo("stopped")
