"""The configurations of queue integrations from the URLs a consumer reads: what ``sync --stomp``, ``--sqs`` register.

A ``stomp`` integration takes ``username``, ``password``, ``destination`` and
``addresses`` (several: an active/standby pair); the STOMP URLs give them all,
the password from the URL or ``WEBHOOK_RECEIVER_STOMP_PASSWORD`` (the user name
likewise from ``WEBHOOK_RECEIVER_STOMP_USERNAME``). An ``aws_sqs`` integration
takes the queue's ``url``, its ``region`` and the keys upstream sends with
(``aws_access_key_id``, ``aws_secret_access_key``: an IAM user allowed
``sqs:SendMessage`` on the queue only). The secrets are never part of a
message, a repr or a line of output.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from ..errors import SyncError
from ..transports.sqs import SqsTransport
from ..transports.stomp import PASSWORD_VARIABLE, USERNAME_VARIABLE, parse_url
from ..untrusted import logger
from .sync import Target

__all__ = ["KNOWN_DESTINATION_PREFIXES", "sqs_target", "stomp_target"]

#: The destination prefixes of RabbitMQ's STOMP plugin and ActiveMQ (Amazon MQ); another is warned of, not refused.
KNOWN_DESTINATION_PREFIXES = ("/queue/", "/topic/", "/exchange/", "/amq/queue/", "/temp-queue/")


def stomp_target(urls: Sequence[str], environ: Mapping[str, str] | None = None) -> Target:
    """The ``stomp`` integration of the broker at *urls* (several: the addresses of a failover pair).

    :param urls: ``stomp://user:password@host:61613/queue/NAME`` or
        ``stomp+ssl://...:61614/...``; the destination is the same in each (or
        given in the first only).
    :param environ: where a user name or password missing from the URLs is
        read (``os.environ`` by default).
    :raises SyncError: if a URL is not a STOMP URL, the destinations differ or
        are missing, or the user name or password is missing.
    """
    environ = os.environ if environ is None else environ
    if not urls:
        raise SyncError("give the broker's STOMP URL: --stomp stomp+ssl://user@host:61614/queue/epcc-orders")
    addresses: list[str] = []
    destination = ""
    username: str | None = None
    password: str | None = None
    for url in urls:
        try:
            parts = parse_url(url)
        except ValueError as exc:
            raise SyncError(f"--stomp: {exc}") from None
        if parts.query.get("vhost", "/") != "/":
            raise SyncError(
                "--stomp: upstream's stomp integration has no virtual host setting, so the broker's default is"
                " used: register the queue on the default virtual host (the URL without ?vhost=)"
            )
        scheme = "stomp+ssl" if parts.tls else "stomp"
        addresses.append(f"{scheme}://{parts.host}:{parts.port}")
        if parts.destination:
            if destination and parts.destination != destination:
                raise SyncError("--stomp: every URL of one broker names the same destination")
            destination = parts.destination
        if parts.username is not None:
            if username is None:
                username, password = parts.username, parts.password
            elif parts.username != username or (password is not None and parts.password not in (None, password)):
                raise SyncError("--stomp: the URLs of one broker give different user names or passwords")
            elif password is None:  # one integration, one login: a later URL may give the password
                password = parts.password
    if not destination:
        raise SyncError("--stomp: the URL has no destination: stomp+ssl://user@host:61614/queue/NAME")
    if not destination.startswith(KNOWN_DESTINATION_PREFIXES):
        logger.warning(
            "--stomp: the destination %s starts with none of %s; registered as written (a typo means upstream"
            " sends where no consumer reads)",
            destination,
            ", ".join(KNOWN_DESTINATION_PREFIXES),
        )
    username = username or environ.get(USERNAME_VARIABLE) or None
    password = password or environ.get(PASSWORD_VARIABLE) or None
    if not username or not password:
        raise SyncError(
            "upstream needs the broker's user name and password: put them in the URL"
            f" (stomp+ssl://user:password@host...) or in {USERNAME_VARIABLE} and {PASSWORD_VARIABLE}"
        )
    configuration = {
        "username": username,
        "password": password,
        "destination": destination,
        "addresses": list(dict.fromkeys(addresses)),
    }
    return Target("stomp", configuration, ("password",))


def sqs_target(
    url: str, *, region: str | None = None, access_key_id: str | None = None, secret_access_key: str | None = None
) -> Target:
    """The ``aws_sqs`` integration of the queue at *url*.

    :param url: the queue URL, ``https://sqs.REGION.amazonaws.com/ACCOUNT/NAME``
        (another endpoint's ``http(s)://host/ACCOUNT/NAME`` for a local one).
    :param region: the queue's region; read from an AWS queue URL when not given.
    :param access_key_id: the key id upstream sends with.
    :param secret_access_key: its secret.
    :raises SyncError: if the URL is not a queue URL, the region is unknown, a
        key is missing, or the queue name does not start with ``epcc`` (upstream's
        policy grants ``sqs:SendMessage`` on ``epcc*`` queues only).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        raise SyncError("--sqs: the queue URL is malformed") from None
    segments = [p for p in parts.path.split("/") if p]
    if parts.scheme not in ("https", "http") or not parts.hostname or len(segments) != 2:
        raise SyncError("--sqs takes the queue URL: https://sqs.REGION.amazonaws.com/ACCOUNT/NAME")
    if parts.username is not None or parts.password is not None:
        raise SyncError("--sqs: a queue URL takes no credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY do)")
    if not segments[1].startswith("epcc"):
        raise SyncError(
            f"--sqs: the queue is named {segments[1]!r}; upstream's IAM policy lets it send to queues"
            " named epcc* only: name the queue epcc-..."
        )
    try:  # the consumer's reading of the URL: its query (region=, wait=), a region's shape, the host's region
        region = SqsTransport(url, region=region).region
    except ValueError as exc:
        raise SyncError(f"--sqs: {exc}") from None
    if not region:
        raise SyncError("--sqs: give the queue's region (--region eu-west-1)")
    if not access_key_id or not secret_access_key:
        raise SyncError(
            "upstream needs keys to send with: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (an IAM user"
            " allowed sqs:SendMessage on the queue) in the app config or the environment"
        )
    configuration = {
        "url": f"{parts.scheme}://{parts.netloc}/{segments[0]}/{segments[1]}",
        "aws_access_key_id": access_key_id,
        "aws_secret_access_key": secret_access_key,
        "region": region,
    }
    return Target("aws_sqs", configuration, ("aws_access_key_id", "aws_secret_access_key"))
