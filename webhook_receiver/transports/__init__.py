"""Queue transports: events from Elastic Path's ``stomp`` and ``aws_sqs`` integrations into the same handlers."""

from .consumer import Consumer, ConsumerStats, Message, Transport, TransportUnavailable, mask_url
from .registry import build_consumer, open_transport

__all__ = [
    "Consumer",
    "ConsumerStats",
    "Message",
    "Transport",
    "TransportUnavailable",
    "build_consumer",
    "mask_url",
    "open_transport",
]
