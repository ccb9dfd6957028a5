"""Receive Moltin / Elastic Path Commerce Cloud webhooks in Flask."""
from . import signals
from .__about__ import __version__
from .errors import (
    BacklogFull,
    BrokerUnavailable,
    InvalidEvent,
    MoltinAPIError,
    MoltinConnectionError,
    PayloadTooLarge,
    StoreUnavailable,
    SyncError,
    TunnelError,
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
    "MoltinAPIError",
    "MoltinConnectionError",
    "PayloadTooLarge",
    "StoreUnavailable",
    "SyncError",
    "TunnelError",
    "UnknownTriggerWarning",
    "WeakSecretWarning",
    "WebhookReceiver",
    "WebhookReceiverError",
    "__version__",
    "signals",
]
