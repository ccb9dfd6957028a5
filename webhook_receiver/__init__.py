"""Receive Moltin / Elastic Path Commerce Cloud webhooks in Flask.

The public names below are imported on first use (:pep:`562`), so that
loading a part of the package (the pytest plugin, the console script) does
not load Flask and the receiver with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .__about__ import __version__

if TYPE_CHECKING:
    from . import signals
    from .errors import (
        BacklogFull,
        BrokerUnavailable,
        InvalidEvent,
        MoltinAPIError,
        MoltinConnectionError,
        PayloadTooLarge,
        StoreUnavailable,
        SyncError,
        TransportUnavailable,
        TunnelError,
        UnknownSettingWarning,
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
    "TransportUnavailable",
    "TunnelError",
    "UnknownSettingWarning",
    "UnknownTriggerWarning",
    "WeakSecretWarning",
    "WebhookReceiver",
    "WebhookReceiverError",
    "__version__",
    "signals",
]

#: Where the public names that are not exceptions live (the exceptions live in ``errors``).
_HOMES = {"Event": ".events", "WebhookReceiver": ".receiver", "signals": ".signals"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_HOMES.get(name, ".errors"), __name__)
    value = module if name == "signals" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
