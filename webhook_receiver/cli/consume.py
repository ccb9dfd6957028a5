"""``flask webhooks consume``: events from a STOMP or SQS queue into the same handlers as webhooks."""

from __future__ import annotations

import logging

import click
from flask import current_app

from ..untrusted import logger, printable
from .group import FiniteFloat, one_line_errors, receiver_named, receiver_option, webhooks_cli


@webhooks_cli.command("consume")
@click.argument("urls", nargs=-1, required=True, metavar="URL...")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=4,
    show_default=True,
    help="Messages handled at once; a STOMP broker may send four times as many ahead (the prefetch).",
)
@click.option(
    "--grace",
    type=FiniteFloat(0, 3600),
    help="Seconds running handlers get to finish on SIGTERM (WEBHOOK_RECEIVER_GRACE_SECONDS, else 10).",
)
@click.option("--region", metavar="REGION", help="SQS: the AWS region, when the queue URL does not say.")
@click.option("--endpoint-url", metavar="URL", help="SQS: another endpoint than AWS's (a local SQS, a VPC endpoint).")
@click.option(
    "--work/--no-work",
    default=True,
    show_default=True,
    help="Background dispatch: also run this process's dispatch workers (the events it stores are theirs).",
)
@receiver_option
@one_line_errors
def consume_command(
    urls: tuple[str, ...],
    concurrency: int,
    grace: float | None,
    region: str | None,
    endpoint_url: str | None,
    work: bool,
    receiver_name: str | None,
) -> None:
    """Take events from a queue of Elastic Path's stomp or aws_sqs integrations into the handlers.

    URL is stomp://USER@HOST:61613/queue/NAME or stomp+ssl://... (give the
    addresses of a broker pair for failover), or an SQS queue:
    https://sqs.REGION.amazonaws.com/ACCOUNT/NAME or sqs://NAME. The STOMP
    password comes from the URL or WEBHOOK_RECEIVER_STOMP_USERNAME and
    WEBHOOK_RECEIVER_STOMP_PASSWORD; SQS credentials from boto3's chain
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, a profile or a role).
    Credentials are never printed.

    A message is acknowledged once its event is durable (background
    dispatch) or handled (inline dispatch); anything else leaves it on the
    queue. Not a CloudEvent: dead-lettered. SIGTERM stops taking messages and
    lets running handlers finish.
    """
    receiver = receiver_named(receiver_name)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        consumer = receiver.consumer(
            app, *urls, concurrency=concurrency, grace=grace, region=region, endpoint_url=endpoint_url
        )
    except ValueError as exc:
        raise click.BadParameter(printable(str(exc)), param_hint="URL") from None
    if not logger.isEnabledFor(logging.INFO) and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logger.setLevel(logging.INFO)
    dispatcher = receiver.get_config(app).dispatcher
    if work:
        dispatcher.start()
    try:
        consumer.run(handle_signals=True)
    finally:
        if work:
            dispatcher.close()
