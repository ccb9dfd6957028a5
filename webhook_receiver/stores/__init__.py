"""Event stores: the inbox that makes every handler run once per event."""

from .base import (
    BacklogStats,
    Claim,
    ClaimState,
    EventStatus,
    EventStore,
    HandlerOutcome,
    StoredEvent,
)
from .memory import MemoryStore
from .registry import StoreFactory, StoreSettings, register_store

__all__ = [
    "BacklogStats",
    "Claim",
    "ClaimState",
    "EventStatus",
    "EventStore",
    "HandlerOutcome",
    "MemoryStore",
    "StoreFactory",
    "StoreSettings",
    "StoredEvent",
    "register_store",
]
