"""Delivering fired events to queue integrations: ``stomp`` through a real broker, ``aws_sqs`` through an SQS endpoint.

Each event goes as upstream puts it on a queue: a CloudEvents 1.0 message in
structured JSON, ``data`` the resource itself (a deleted one ``{id, type}``),
the extensions ``integrationid`` and ``storeid``. On SQS a message over
256 KiB has its included resources replaced by
``"included": {"meta": {"includes_elided": true}}``.

What went wrong is said without the credentials: neither stomp.py's nor
botocore's messages are quoted.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Mapping, NamedTuple
from urllib.parse import parse_qs, urlsplit

from ...cloudevents import SPECVERSION

__all__ = ["ELIDED", "SOURCE", "SQS_MAX_BYTES", "Sent", "cloudevent", "send_sqs", "send_stomp"]

#: The ``source`` upstream's messages carry.
SOURCE = "https://epcc-integration.global.ssl.fastly.net"
#: The largest message SQS takes (256 KiB); upstream elides the included resources of a bigger one.
SQS_MAX_BYTES = 256 * 1024
#: What replaces the included resources of an oversized SQS message.
ELIDED: dict[str, Any] = {"meta": {"includes_elided": True}}


class Sent(NamedTuple):
    """The outcome of one attempt to put a message on a queue."""

    #: The status the queue answered (SQS's HTTP status), or ``None`` (STOMP has none).
    status: int | None
    #: What the queue answered (SQS: its message id, as JSON), or ``""``.
    answer: str
    #: Why it failed, or ``None`` when it succeeded.
    error: str | None


def cloudevent(body: Mapping[str, Any], *, integration_id: str, store_id: str, max_bytes: int | None = None) -> bytes:
    """The CloudEvent upstream would send for a webhook *body* of :func:`~webhook_receiver.wire.make_event`.

    :param max_bytes: SQS's limit: a message over it has its included
        resources elided (``None``: never).
    """
    content = body.get("payload")
    if not isinstance(content, Mapping):
        resources = body.get("resources")
        content = json.loads(resources) if isinstance(resources, str) else (resources or {})
    assert isinstance(content, Mapping)
    trigger = str(body["triggered_by"])
    if trigger.endswith(".deleted") or "data" not in content:
        data: Any = {"id": content.get("id"), "type": content.get("type")}
        included: Any = None
    else:
        data, included = content["data"], content.get("included")
    message: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": body["id"],
        "type": trigger,
        "source": SOURCE,
        "datacontenttype": "application/json",
        "integrationid": integration_id,
        "storeid": store_id,
        "data": data,
    }
    if included is not None:
        message["included"] = included
    encoded = _utf8_json(message)
    if max_bytes is not None and len(encoded) > max_bytes and included is not None:
        message["included"] = ELIDED
        encoded = _utf8_json(message)
    return encoded


def _utf8_json(message: Mapping[str, Any]) -> bytes:
    """*message* as UTF-8 JSON, as upstream sends it and SQS counts it (escaped only where UTF-8 cannot say it)."""
    try:
        return json.dumps(message, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate, from a \ud800 escape in the body
        return json.dumps(message).encode()


class _Errors:
    """stomp.py's callbacks: an ERROR frame from the broker, noted."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.done = threading.Event()

    def on_error(self, frame: Any) -> None:
        self.error = str(frame.headers.get("message", "no message"))[:200]

    def on_receipt(self, frame: Any) -> None:
        self.done.set()


def send_stomp(configuration: Mapping[str, Any], message: bytes, *, timeout: float = 10.0) -> Sent:
    """Put *message* on a ``stomp`` integration's ``destination``, at the first of its ``addresses`` that answers.

    Persistent, and taken once the broker's receipt arrives.
    """
    from ...transports.stomp import stomp_module

    try:
        stomp = stomp_module()
    except RuntimeError as exc:
        return Sent(None, "", str(exc))
    hosts: list[tuple[str, int]] = []
    tls_hosts: list[tuple[str, int]] = []
    vhost = "/"
    for address in configuration.get("addresses") or []:
        try:
            parts = urlsplit(str(address))
            port = parts.port or (61614 if parts.scheme != "stomp" else 61613)
        except ValueError:
            continue
        if not parts.hostname:
            continue
        hosts.append((parts.hostname, port))
        if parts.scheme in ("stomp+ssl", "stomp+tls", "ssl"):
            tls_hosts.append((parts.hostname, port))
        vhost = parse_qs(parts.query).get("vhost", [vhost])[-1]
    if not hosts:
        return Sent(None, "", "the integration has no address to deliver to")
    connection = stomp.Connection12(
        host_and_ports=hosts, vhost=vhost, reconnect_attempts_max=1, auto_decode=False, timeout=timeout
    )
    if tls_hosts:
        connection.set_ssl(for_hosts=tls_hosts)
    listener = _Errors()
    connection.set_listener("emulator", listener)
    where = ", ".join(f"{host}:{port}" for host, port in hosts)
    try:
        connection.connect(configuration.get("username"), configuration.get("password"), wait=True)
    except Exception as exc:  # noqa: BLE001 - stomp.py's exceptions name no credential; the kind is enough
        reason = listener.error or type(exc).__name__
        _close(connection)
        return Sent(None, "", f"could not connect to the broker at {where}: {reason}")
    try:
        connection.send(
            str(configuration.get("destination")),
            message,
            content_type="application/cloudevents+json",
            headers={"persistent": "true", "receipt": "emulator-sent"},
        )
        taken = listener.done.wait(timeout)
    except Exception as exc:  # noqa: BLE001
        _close(connection)
        return Sent(None, "", f"could not send to {configuration.get('destination')}: {type(exc).__name__}")
    _close(connection)
    if listener.error is not None:
        return Sent(None, "", f"the broker refused the message: {listener.error}")
    if not taken:
        return Sent(None, "", f"the broker sent no receipt within {timeout:g} seconds")
    return Sent(None, "", None)


def _close(connection: Any) -> None:
    try:
        connection.disconnect()
    except Exception:  # noqa: BLE001 - it is gone either way
        pass


def send_sqs(
    configuration: Mapping[str, Any], message: bytes, *, endpoint_url: str | None = None, timeout: float = 10.0
) -> Sent:
    """Put *message* on an ``aws_sqs`` integration's queue (``url``), with its keys and region.

    :param endpoint_url: another SQS endpoint than AWS's for the region (moto's, in tests).
    """
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError:
        return Sent(None, "", "delivering to SQS needs boto3: pip install 'webhook_receiver[sqs]'")
    keys = [str(configuration.get(k) or "") for k in ("aws_access_key_id", "aws_secret_access_key")]
    try:
        client = boto3.session.Session().client(
            "sqs",
            region_name=str(configuration.get("region") or "") or None,
            aws_access_key_id=keys[0] or None,
            aws_secret_access_key=keys[1] or None,
            endpoint_url=endpoint_url,
            config=botocore.config.Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1}),
        )
        answer = client.send_message(QueueUrl=str(configuration.get("url")), MessageBody=message.decode())
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return Sent(status, "", f"SQS refused the message: {error.get('Code', type(exc).__name__)}")
    except (botocore.exceptions.BotoCoreError, ValueError) as exc:  # the message may quote a request: not shown
        return Sent(None, "", f"could not reach SQS for {configuration.get('url')}: {type(exc).__name__}")
    status = answer.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return Sent(status, json.dumps({"MessageId": answer.get("MessageId")}), None)
