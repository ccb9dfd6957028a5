"""The store interface: the inbox of events and the record that makes handlers run once.

A delivery goes through a store in three steps:

1. :meth:`EventStore.claim` takes the event for processing under a lease, or
   says it is already done, or busy with another worker;
2. :meth:`EventStore.record` keeps the outcome of each handler as it runs;
3. :meth:`EventStore.finish` marks the event processed or failed and ends the
   lease.

A redelivery of a failed event is claimed again with the names of the handlers
that already succeeded, which are then skipped. Background dispatch first
makes the event durable with :meth:`EventStore.accept`, answers upstream, and
claims it later in a worker. Stores raise
:class:`~webhook_receiver.errors.StoreUnavailable` when they cannot answer; the
receiver then answers ``503`` and upstream retries.
"""
from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

from ..events import Event

__all__ = ["Claim", "ClaimState", "EventStatus", "EventStore", "HandlerOutcome", "Run", "StoredEvent"]


class ClaimState(str, enum.Enum):
    """What :meth:`EventStore.claim` found."""

    #: The caller holds the lease and runs the handlers not yet succeeded.
    CLAIMED = "claimed"
    #: Every handler already succeeded: a duplicate delivery.
    DONE = "done"
    #: Another worker holds a live lease on the event.
    BUSY = "busy"


class EventStatus(str, enum.Enum):
    """Where an event stands."""

    #: Accepted for background processing; no worker has claimed it yet.
    PENDING = "pending"
    PROCESSING = "processing"
    PROCESSED = "processed"
    FAILED = "failed"


@dataclass(frozen=True)
class Claim:
    """The answer of :meth:`EventStore.claim`.

    :param event_id: the event's id.
    :param state: what the store found.
    :param token: identifies the lease, when :attr:`state` is ``CLAIMED``.
    :param succeeded: names of the handlers that already succeeded.
    """

    event_id: str
    state: ClaimState
    token: str = ""
    succeeded: frozenset[str] = frozenset()


class Run(NamedTuple):
    """One run of one handler, as :meth:`EventStore.record` takes it."""

    name: str
    ok: bool
    error: str | None
    started_at: float
    finished_at: float


@dataclass(frozen=True)
class HandlerOutcome:
    """How one handler fared on one event, over every attempt so far.

    :param name: the handler's name.
    :param ok: whether its last attempt succeeded.
    :param error: ``"ExceptionType: message"`` of its last failure, else ``None``.
    :param attempts: how many times it ran.
    :param started_at: when its last attempt started (epoch seconds).
    :param finished_at: when its last attempt ended (epoch seconds).
    """

    name: str
    ok: bool
    error: str | None
    attempts: int
    started_at: float
    finished_at: float


@dataclass
class StoredEvent:
    """An event as a store keeps it.

    :param id: the event's id.
    :param trigger: its trigger.
    :param status: where it stands.
    :param raw: the redacted body.
    :param handlers: each handler's outcome, by name.
    :param received_at: when it was first claimed (epoch seconds).
    :param updated_at: when it last changed (epoch seconds).
    """

    id: str
    trigger: str
    status: EventStatus
    raw: Mapping[str, Any]
    handlers: dict[str, HandlerOutcome] = field(default_factory=dict)
    received_at: float = 0.0
    updated_at: float = 0.0


class EventStore(ABC):
    """Where events and handler outcomes are kept; see the module docs for the protocol.

    :param lease_seconds: how long a claim stays exclusive. After that, a
        worker that died mid-handler no longer blocks the event: the next
        delivery takes it over.
    """

    #: A short name for messages, such as ``"memory"``.
    name: str = "store"

    def __init__(self, *, lease_seconds: float = 60.0) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.lease_seconds = lease_seconds

    @abstractmethod
    def claim(self, event: Event) -> Claim:
        """Take *event* for processing, atomically.

        :raises StoreUnavailable: if the store cannot answer.
        """

    @abstractmethod
    def record(self, claim: Claim, name: str, *, ok: bool, error: str | None,
               started_at: float, finished_at: float) -> None:
        """Keep the outcome of one handler run.

        :param claim: the claim the handler ran under.
        :param name: the handler's name.
        :param ok: whether it succeeded.
        :param error: ``"ExceptionType: message"`` when it failed.
        :param started_at: when it started (epoch seconds).
        :param finished_at: when it ended (epoch seconds).
        :raises StoreUnavailable: if the store cannot take it.
        """

    def finish(self, claim: Claim, *, ok: bool, last: Run | None = None) -> None:
        """Mark the event processed (*ok*) or failed, and end the lease.

        A claim whose lease was taken over by another worker changes nothing
        but the outcome in *last*.

        :param last: the last handler run, recorded first (stores may do
            both in one write).
        :raises StoreUnavailable: if the store cannot take it.
        """
        if last is not None:
            self.record(claim, last.name, ok=last.ok, error=last.error, started_at=last.started_at,
                        finished_at=last.finished_at)
        self._finish(claim, ok=ok)

    @abstractmethod
    def _finish(self, claim: Claim, *, ok: bool) -> None:
        """Mark the event processed or failed and end the lease, if *claim* still holds it."""

    @abstractmethod
    def get(self, event_id: str) -> StoredEvent | None:
        """The stored event with this id, or ``None``.

        :raises StoreUnavailable: if the store cannot answer.
        """

    @abstractmethod
    def accept(self, event: Event) -> EventStatus | None:
        """Make *event* durable as :attr:`EventStatus.PENDING`, unless it is stored already.

        :returns: ``None`` when the event is new (and now pending), else the
            status it already has.
        :raises StoreUnavailable: if the store cannot take it.
        """

    @abstractmethod
    def events(self, *, status: EventStatus | None = None, trigger: str | None = None,
               since: float | None = None, limit: int | None = None) -> list[StoredEvent]:
        """Stored events, newest first, filtered.

        :param status: only events with this status.
        :param trigger: only events with this trigger.
        :param since: only events received at or after this time (epoch seconds).
        :param limit: at most this many.
        :raises StoreUnavailable: if the store cannot answer.
        """

    @abstractmethod
    def prune(self, before: float) -> int:
        """Forget finished (processed or failed) events received before *before*.

        :returns: how many were forgotten.
        :raises StoreUnavailable: if the store cannot answer.
        """

    def close(self) -> None:
        """Release connections; the store may be used again afterwards."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} lease_seconds={self.lease_seconds}>"
