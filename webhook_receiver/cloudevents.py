"""The fields of an Elastic Path CloudEvent: what the queue integrations (``stomp``, ``aws_sqs``) send.

Upstream puts each event on a queue as a CloudEvents 1.0 message in
structured JSON::

    {"specversion": "1.0", "id": "9a21fb54-...", "type": "cart.updated",
     "source": "https://epcc-integration.global.ssl.fastly.net",
     "datacontenttype": "application/json",
     "integrationid": "e17db0d8-...", "storeid": "b33e328f-...",
     "data": {"id": "a-cart-id", "type": "cart", ...}}

``data`` is the resource itself (a deleted one is ``{"id", "type"}``). On SQS,
a message over 256 KiB has its included resources replaced by
``"included": {"meta": {"includes_elided": true}}``.

This module only reads the fields of a body that :mod:`webhook_receiver.events`
has already decoded and redacted; it knows nothing of :class:`~webhook_receiver.events.Event`,
which it sits below. The CloudEvents SDK is not used: it refuses a message
without ``source`` or with another ``specversion`` outright, where a queue
consumer must keep odd but usable messages (a refusal dead-letters the event);
it decodes JSON without the redaction every body goes through; and the checks
that matter here (an event id and an event name) are Elastic Path's, not the
specification's.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from .catalogue import is_event_name
from .errors import InvalidEvent

__all__ = [
    "SPECVERSION",
    "TRANSPORT_ATTRIBUTE",
    "CloudEventFields",
    "includes_elided",
    "is_cloudevent",
    "read_fields",
    "transport_of",
]

#: The CloudEvents version upstream sends.
SPECVERSION = "1.0"

#: The extension attribute the consumer adds to a stored body: the transport
#: it came through (``stomp``, ``sqs``), since the body does not say.
TRANSPORT_ATTRIBUTE = "receivedvia"

#: The ``integration_type`` upstream gives each transport's integrations.
INTEGRATION_TYPES = {"stomp": "stomp", "sqs": "aws_sqs"}


class CloudEventFields(NamedTuple):
    """What :func:`read_fields` found in a CloudEvent."""

    #: The event name (``type``).
    trigger: str
    #: The resource (``data``), as sent.
    data: Any
    #: The related resources (``included``), or ``None``.
    included: Any
    #: ``storeid``, as sent.
    store_id: Any
    #: ``{"id": integrationid, "integration_type": ...}``, with what is known.
    integration: dict[str, Any]
    #: ``source``, as sent.
    source: Any
    #: The fields whose shape was unexpected.
    irregular: tuple[str, ...]


def is_cloudevent(raw: Mapping[str, Any]) -> bool:
    """Whether a decoded body is a CloudEvent rather than a webhook body (which has ``triggered_by``)."""
    return "triggered_by" not in raw and ("specversion" in raw or "type" in raw)


def includes_elided(included: Any) -> bool:
    """Whether *included* is upstream's marker for included resources left out of an oversized message."""
    if not isinstance(included, Mapping):
        return False
    meta = included.get("meta")
    return isinstance(meta, Mapping) and meta.get("includes_elided") is True


def transport_of(raw: Mapping[str, Any]) -> str:
    """How a stored body came in: ``"webhook"``, or the transport a consumer noted in ``receivedvia``."""
    if not isinstance(raw, Mapping) or not is_cloudevent(raw):
        return "webhook"
    via = raw.get(TRANSPORT_ATTRIBUTE)
    return via if isinstance(via, str) and via else "queue"


def read_fields(raw: Mapping[str, Any], transport: str) -> CloudEventFields:
    """Check and read the fields of a decoded, redacted CloudEvent (its ``id`` is checked by the caller).

    Liberal on shape: only ``type`` must be an event name; an unexpected
    ``specversion``, ``source``, ``datacontenttype``, ``storeid``,
    ``integrationid``, a ``data_base64`` (binary data, which upstream does not
    send) or a ``data`` that is a string (upstream sends the resource, an
    object) is kept as sent and listed in :attr:`CloudEventFields.irregular`.

    :param raw: the body.
    :param transport: the transport it came through, for the integration's type.
    :raises InvalidEvent: if ``type`` is missing or not an event name.
    """
    get = raw.get  # one look-up per field: this runs for every message
    trigger = get("type")
    if trigger is None:
        raise InvalidEvent("the message has no type", field="type")
    if not isinstance(trigger, str) or not is_event_name(trigger):
        raise InvalidEvent("type is not an event name", field="type")
    source, store_id, integration_id = get("source"), get("storeid"), get("integrationid")
    content_type = get("datacontenttype")
    irregular: list[str] = []
    if get("specversion") != SPECVERSION:
        irregular.append("specversion")
    if source is not None and not isinstance(source, str):
        irregular.append("source")
    if store_id is not None and not isinstance(store_id, str):
        irregular.append("storeid")
    if integration_id is not None and not isinstance(integration_id, str):
        irregular.append("integrationid")
    if content_type is not None and not (isinstance(content_type, str) and "json" in content_type.lower()):
        irregular.append("datacontenttype")
    if "data_base64" in raw:
        irregular.append("data_base64")
    data = get("data")
    if isinstance(data, str):
        irregular.append("data")
    integration: dict[str, Any] = {} if integration_id is None else {"id": integration_id}
    integration_type = INTEGRATION_TYPES.get(transport)
    if integration_type is not None:
        integration["integration_type"] = integration_type
    return CloudEventFields(trigger, data, get("included"), store_id, integration, source, tuple(irregular))
