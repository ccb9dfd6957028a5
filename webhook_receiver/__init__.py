"""Receive Moltin / Elastic Path Commerce Cloud webhooks in Flask."""
from . import signals
from .__about__ import __version__
from .errors import (
    BacklogFull,
    BrokerUnavailable,
    InvalidEvent,
    PayloadTooLarge,
    StoreUnavailable,
    UnknownTriggerWarning,
    WeakSecretWarning,
    WebhookReceiverError,
)
from .events import Event
from .receiver import WebhookReceiver

__all__ = [
    "BacklogFull",
    "BrokerUnavailable",
    "Event",
    "InvalidEvent",
    "PayloadTooLarge",
    "StoreUnavailable",
    "UnknownTriggerWarning",
    "WeakSecretWarning",
    "WebhookReceiver",
    "WebhookReceiverError",
    "__version__",
    "signals",
]
