"""The ``webhook-receiver`` console script: what needs no Flask app."""

from __future__ import annotations

import json
import logging
import shlex
from typing import Any

import click

from ..__about__ import __version__
from ..catalogue import is_known, unknown_trigger
from ..redact import hide_passwords
from ..untrusted import printable
from .emulator import Emulator

__all__ = ["check_trigger", "main"]


@click.group()
@click.version_option(__version__, prog_name="webhook-receiver")
def main() -> None:
    """Tools for Elastic Path (Moltin) webhooks that need no Flask app: a local API stand-in, sample events."""


@main.command("emulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, help="Port to listen on; 0 picks a free one.")
@click.option("--client-id", help="The client id the token endpoint accepts (default: a fresh one).")
@click.option(
    "--client-secret",
    envvar="EMULATOR_CLIENT_SECRET",
    help="The client secret it accepts (default: a fresh one; or set EMULATOR_CLIENT_SECRET).",
)
@click.option(
    "--retry-delays", default="1,2,4,8", show_default=True, help="Seconds before each delivery retry, comma-separated."
)
@click.option("--access-log", is_flag=True, help="Log every request it serves, as werkzeug does.")
@click.option(
    "--sqs-endpoint",
    "sqs_endpoint_url",
    metavar="URL",
    help="Deliver to aws_sqs integrations through this SQS endpoint (a local one) instead of AWS's.",
)
def emulate(
    host: str,
    port: int,
    client_id: str | None,
    client_secret: str | None,
    retry_delays: str,
    access_log: bool,
    sqs_endpoint_url: str | None,
) -> None:
    """Run a local stand-in for the Moltin API that really delivers webhooks (and to STOMP and SQS queues).

    Point EPCC_API_BASE_URL at it (the export line it prints), sync an
    integration, then fire events with POST /emulator/fire {"trigger": "order.paid"}.
    """
    try:
        delays = [float(d) for d in retry_delays.split(",") if d.strip()]
    except ValueError:
        raise click.BadParameter(
            "use numbers separated by commas, such as 1,2,4", param_hint="--retry-delays"
        ) from None
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    emulator = Emulator(
        client_id=client_id,
        client_secret=client_secret,
        host=host,
        port=port,
        retry_delays=delays,
        quiet=not access_log,
        sqs_endpoint_url=sqs_endpoint_url,
    )
    try:
        emulator.bind()
    except OSError as exc:
        hint = "; try --port 0 for a free one" if port else ""
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    click.echo(f"Moltin emulator on {emulator.url} (Ctrl-C to stop). Its credentials for this run, to paste:")
    click.echo(
        f"export EPCC_API_BASE_URL={shlex.quote(emulator.url)} EPCC_CLIENT_ID={shlex.quote(emulator.client_id)}"
        f" EPCC_CLIENT_SECRET={shlex.quote(emulator.client_secret)}"
    )
    emulator.serve_forever()


def check_trigger(trigger: str) -> str:
    """Refuse a trigger upstream does not know, with the closest one ("did you mean order.paid?").

    :raises click.BadParameter: for an unknown name.
    """
    if not is_known(trigger):
        raise click.BadParameter(printable(unknown_trigger(trigger)), param_hint="TRIGGER")
    return trigger


def read_data(path: str | None) -> dict[str, Any] | None:
    """The resource in a JSON file given to ``send --data``, or ``None``."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {printable(path)}: {exc.strerror}", param_hint="--data") from None
    except ValueError as exc:
        raise click.BadParameter(f"{printable(path)} is not JSON: {exc}", param_hint="--data") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{printable(path)} must hold a JSON object (the resource)", param_hint="--data")
    return data


def deliver_to_url(url: str, body: dict[str, Any], secret: str | None) -> None:
    """POST *body* to *url* as Moltin would and report the answer (see :func:`report`)."""
    import requests

    from ..wire import post
    from .emulator.firing import unreachable

    try:
        answer = post(url, body, secret=secret)
    except requests.Timeout:
        shown = hide_passwords(f"could not deliver to {url}: no answer in time")
        raise click.ClickException(printable(shown)) from None
    except requests.RequestException as exc:
        raise click.ClickException(printable(hide_passwords(unreachable(url, exc)))) from None
    if answer.is_redirect or 300 <= answer.status_code < 400:
        location = answer.headers.get("Location", "(no Location)")
        raise click.ClickException(
            printable(
                hide_passwords(
                    f"{url} answered {answer.status_code}, a redirect to {location}: not followed, since it would"
                    " carry the secret there; deliver to the final URL"
                )
            )
        )
    report(answer.status_code, answer.text)


def report(status: int, body: str) -> None:
    """Print an answer; exit non-zero when it is not a 2xx."""
    click.echo(printable(f"{status} {body.strip()}"))
    if not 200 <= status < 300:
        raise SystemExit(1)


data_option = click.option(
    "--data", "data_file", metavar="FILE", help="A JSON file with the resource (default: a realistic sample)."
)
attempt_option = click.option(
    "--attempt", default=1, show_default=True, type=click.IntRange(min=1), help="The delivery attempt to claim."
)


@main.command("send")
@click.argument("trigger")
@click.option("--to", "url", required=True, help="The receiver's full URL.")
@click.option(
    "--secret",
    envvar="WEBHOOK_RECEIVER_SECRET_KEY",
    required=True,
    help="The secret to send (or set WEBHOOK_RECEIVER_SECRET_KEY, which keeps it out of shell history).",
)
@data_option
@attempt_option
def send(trigger: str, url: str, secret: str, data_file: str | None, attempt: int) -> None:
    """Send a sample TRIGGER event, as Moltin would, and print the answer."""
    from ..wire import make_event

    deliver_to_url(url, make_event(check_trigger(trigger), read_data(data_file), attempt=attempt), secret)


if __name__ == "__main__":
    main()
