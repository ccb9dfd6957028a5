"""From URLs to a transport: ``stomp://`` and ``stomp+ssl://`` (several: failover), ``sqs://`` and SQS queue URLs."""

from __future__ import annotations

from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from ..handlers import HandlerSource
from .consumer import Consumer, Transport, check_counts

__all__ = ["build_consumer", "default_prefetch", "open_transport"]


def default_prefetch(concurrency: int) -> int:
    """The prefetch for *concurrency*: more messages than the handlers take at once, so that the next one is
    there when a handler finishes (a round trip per message otherwise; SQS receives 10 at a time), and bounded."""
    return concurrency * 4


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme
    except ValueError:
        return ""


def open_transport(
    urls: Sequence[str],
    *,
    prefetch: int = 4,
    region: str | None = None,
    endpoint_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Transport:
    """The transport for *urls*; nothing is connected yet.

    :param urls: one SQS queue, or the STOMP addresses of one broker (several are failover).
    :param prefetch: STOMP: messages the broker may send ahead.
    :param region: SQS: the region, when the URL does not say.
    :param endpoint_url: SQS: another endpoint.
    :param environ: STOMP: where credentials missing from the URLs are read.
    :raises ValueError: if the URLs are not of one known kind (the message never quotes them).
    """
    if not urls:
        raise ValueError(
            "give a queue URL: stomp://user@host:61613/queue/NAME or https://sqs.REGION.amazonaws.com/ACCOUNT/NAME"
        )
    schemes = {_scheme(url) for url in urls}
    if schemes <= {"stomp", "stomp+ssl", "stomp+tls"}:
        given = [name for name, value in (("a region", region), ("an endpoint URL", endpoint_url)) if value]
        if given:  # an SQS queue's settings: dropped here, they would leave the user believing they count
            raise ValueError(
                f"{' and '.join(given)} {'are' if len(given) > 1 else 'is'} for an SQS queue, not a STOMP broker:"
                f" leave {'them' if len(given) > 1 else 'it'} out"
            )
        from .stomp import StompTransport

        return StompTransport(urls, prefetch=prefetch, environ=environ)
    if schemes <= {"sqs", "https", "http"}:
        if len(urls) > 1:
            raise ValueError("one SQS queue per consumer: run a consumer for each queue")
        from .sqs import SqsTransport

        return SqsTransport(urls[0], region=region, endpoint_url=endpoint_url)
    raise ValueError(
        "a queue URL is stomp://, stomp+ssl:// (several: a failover pair), sqs://NAME or"
        " https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, and one consumer takes one kind"
    )


def build_consumer(
    receiver: HandlerSource,
    app: Any,
    config: Any,
    urls: Sequence[str],
    *,
    concurrency: int = 4,
    prefetch: int | None = None,
    grace: float | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    transport: Transport | None = None,
) -> Consumer:
    """A consumer of *urls* (or of *transport*) into *receiver*'s handlers, with *config*'s dispatcher and limit.

    :param config: the receiver's :class:`~webhook_receiver.config.ReceiverConfig` on *app*.
    :param grace: seconds running handlers get at shutdown; the dispatcher's
        (``WEBHOOK_RECEIVER_GRACE_SECONDS``) by default, else 10.
    :raises ValueError: if *concurrency* or *prefetch* is not a whole number
        of at least 1, or *grace* not a finite number of seconds, 0 or more.
    """
    check_counts(concurrency=concurrency, prefetch=prefetch)
    if prefetch is None:
        prefetch = default_prefetch(concurrency)
    if transport is None:
        transport = open_transport(
            urls,
            prefetch=prefetch,
            region=region,
            endpoint_url=endpoint_url,
            environ=environ,
        )
    return Consumer(
        receiver,
        app,
        config.dispatcher,
        transport,
        max_message_bytes=config.max_content_length,
        concurrency=concurrency,
        prefetch=prefetch,
        grace=float(getattr(config.dispatcher, "grace", 10.0) if grace is None else grace),
    )
