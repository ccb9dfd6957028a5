"""Event stores: the inbox that makes every handler run once per event."""
from .base import (
    Claim,
    ClaimState,
    EventStatus,
    EventStore,
    HandlerOutcome,
    StoredEvent,
)
from .memory import MemoryStore

__all__ = [
    "Claim",
    "ClaimState",
    "EventStatus",
    "EventStore",
    "HandlerOutcome",
    "MemoryStore",
    "StoredEvent",
]
