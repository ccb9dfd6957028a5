"""The store interface: the inbox of events, the work queue, and the record that makes handlers run once.

A delivery handled in the request (``inline`` dispatch) goes through a store
in two writes:

1. :meth:`EventStore.claim` takes the event under a lease, or says it is
   already done, or busy with another worker;
2. :meth:`EventStore.finish` writes the handlers' outcomes and the event's
   status, and ends the lease.

Background dispatch makes the store the work queue:

1. :meth:`EventStore.accept` makes the event durable, ``pending`` and due now:
   that one write is what a 202 promises;
2. workers take due events with :meth:`EventStore.claim_due`, oldest due
   first, an event whose lease ran out (its worker died) counting as due;
   the lease is renewed (:meth:`EventStore.renew`) while handlers run;
3. a failed run is finished with ``retry_at``: the event is ``pending`` again,
   due then, so that a retry survives any restart.

The two meet in a rolling deploy from inline to background dispatch: an event
a request holds may be accepted meanwhile (upstream's retry answered 202 by an
instance with background dispatch), which makes the event the queue's. Should
the request's claim then fail without a ``retry_at``, :meth:`EventStore.finish`
leaves it ``pending`` and due now rather than ``failed``, as the queue would
have taken it over had the request died: the 202 promised the queue's retries
(see :attr:`Claim.by_queue`).

Every write made under a claim is *fenced*: it carries the claim's token and
the store refuses it (the method returns ``False``) once another worker has
taken the event over. :meth:`EventStore.renew` extends a lease while a handler
runs. Stores raise :class:`~webhook_receiver.errors.StoreUnavailable` when they
cannot answer; the receiver then answers ``503`` and upstream retries.
"""

from __future__ import annotations

import copy
import enum
import itertools
import math
import os
import secrets
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

from .. import fastjson
from ..events import Event

__all__ = [
    "DAMAGED_DELIVERY",
    "DEFAULT_RECEIVER",
    "MAX_DELIVERIES",
    "BacklogStats",
    "Claim",
    "ClaimState",
    "DeliveryAttempt",
    "EventStatus",
    "EventStore",
    "HandlerOutcome",
    "HandlerTransaction",
    "HourCount",
    "Run",
    "StoredEvent",
    "dump_delivery",
    "dump_outcomes",
    "finished_status",
    "hour_start",
    "leaves_to_queue",
    "prunable",
    "load_delivery",
    "load_outcomes",
    "load_raw",
    "new_token",
]


#: The name of a receiver built without one (``WebhookReceiver()``): the receiver stores serve by default.
DEFAULT_RECEIVER = "moltin"


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

    #: Waiting for a worker: accepted for background processing, or due again
    #: after a failed run (see :attr:`StoredEvent.due_at`).
    PENDING = "pending"
    #: A worker holds a lease on it.
    PROCESSING = "processing"
    #: Every handler succeeded.
    PROCESSED = "processed"
    #: Some handler failed and no run is scheduled: upstream's retry (inline
    #: dispatch) or ``flask webhooks replay`` runs it again.
    FAILED = "failed"
    #: Some handler failed, and an operator marked the event settled
    #: (:meth:`EventStore.resolve`): kept, left out of ``replay --failed``
    #: and of the failed view, pruned only with ``include_failed``. A replay
    #: by id, or a redelivery from upstream, runs it again as a failed one.
    RESOLVED = "resolved"


class Run(NamedTuple):
    """One run of one handler (or a skip: ``ok`` with the reason in ``skipped``)."""

    name: str
    ok: bool
    error: str | None
    started_at: float
    finished_at: float
    skipped: str | None = None


@dataclass(frozen=True)
class HandlerOutcome:
    """How one handler fared on one event, over every attempt so far.

    :param name: the handler's name.
    :param ok: whether its last attempt succeeded.
    :param error: ``"ExceptionType: message"`` of its last failure, else ``None``.
    :param attempts: how many times it ran.
    :param started_at: when its last attempt started (epoch seconds).
    :param finished_at: when its last attempt ended (epoch seconds).
    :param skipped: why its last attempt did not run the handler (a
        ``latest_only`` handler given an event older than one it handled),
        else ``None``.
    """

    name: str
    ok: bool
    error: str | None
    attempts: int
    started_at: float
    finished_at: float
    skipped: str | None = None


class Claim:
    """A lease on an event, or the reason there is none.

    The handler outcomes travel with the claim: the lease holder alone may
    write them, so the store reads them when the claim is taken and writes
    them back, fenced by :attr:`token`, with each :meth:`EventStore.record`
    and :meth:`EventStore.finish`.

    :param event_id: the event's id.
    :param state: what the store found.
    :param token: the fencing token of the lease, when :attr:`state` is ``CLAIMED``.
    :param attempt: the number of this run of the event, from 1.
    :param outcomes: each handler's outcome so far, by name.
    :param trigger: the event's trigger (set by :meth:`EventStore.claim_due`).
    :param raw: the stored, redacted body (set by :meth:`EventStore.claim_due`).
    :param by_queue: whether the run is the queue's (see :attr:`by_queue`).
    """

    __slots__ = ("event_id", "state", "token", "attempt", "outcomes", "trigger", "raw", "lost", "by_queue", "requeued")

    def __init__(
        self,
        event_id: str,
        state: ClaimState,
        token: str = "",
        *,
        attempt: int = 0,
        outcomes: dict[str, HandlerOutcome] | None = None,
        trigger: str = "",
        raw: Mapping[str, Any] | None = None,
        by_queue: bool = False,
    ) -> None:
        self.event_id = event_id
        self.state = state
        self.token = token
        self.attempt = attempt
        self.outcomes: dict[str, HandlerOutcome] = outcomes if outcomes is not None else {}
        self.trigger = trigger
        self.raw = raw
        #: Whether the run is the queue's, its retries decided by a background dispatcher's
        #: :class:`~webhook_receiver.dispatch.base.RetryPolicy`: taken by :meth:`EventStore.claim_due` (which
        #: sets it), or handed over to the queue by the dispatcher that took it (inline dispatch answering
        #: 202 at its deadline). A failed :meth:`~EventStore.finish` without ``retry_at`` of such a claim
        #: is the queue giving up: the event is ``failed``. A claim taken by a request or a consumer
        #: (:meth:`EventStore.claim`, :meth:`EventStore.claim_many`) leaves an event that came through the
        #: queue (accepted, answered 202, perhaps while this claim held it) ``pending`` and due now instead.
        self.by_queue = by_queue
        #: Set by a failed :meth:`~EventStore.finish` that left the event to the queue (see :attr:`by_queue`).
        self.requeued = False
        #: Set when a write or a renewal found the lease taken over.
        self.lost = False

    @property
    def succeeded(self) -> frozenset[str]:
        """The names of the handlers that already succeeded for this event."""
        return frozenset(name for name, outcome in self.outcomes.items() if outcome.ok)

    def with_run(self, run: Run | None) -> dict[str, HandlerOutcome]:
        """:attr:`outcomes` with *run* folded in, as a new dict (stores write it, then keep it)."""
        outcomes = dict(self.outcomes)
        if run is not None:
            previous = outcomes.get(run.name)
            # Built without the frozen dataclass's __init__ (one object.__setattr__ per field): every delivery
            # makes one.
            outcome = object.__new__(HandlerOutcome)
            outcome.__dict__.update(
                name=run.name,
                ok=run.ok,
                error=run.error,
                attempts=(previous.attempts if previous else 0) + 1,
                started_at=run.started_at,
                finished_at=run.finished_at,
                skipped=run.skipped,
            )
            outcomes[run.name] = outcome
        return outcomes

    def __repr__(self) -> str:  # never the body
        return f"<Claim {self.event_id!r} {self.state.value} attempt={self.attempt}>"


@dataclass
class StoredEvent:
    """An event as a store keeps it.

    :param id: the event's id.
    :param trigger: its trigger.
    :param status: where it stands.
    :param raw: the redacted body.
    :param handlers: each handler's outcome, by name.
    :param received_at: when it was first stored (epoch seconds).
    :param updated_at: when it last changed (epoch seconds).
    :param attempts: how many runs of it were started.
    :param due_at: when it is due for a run, while it is pending, else ``None``.
    :param error: why it failed without running its handlers (a stored body
        that cannot be rebuilt), else ``None``.
    """

    id: str
    trigger: str
    status: EventStatus
    raw: Mapping[str, Any]
    handlers: dict[str, HandlerOutcome] = field(default_factory=dict)
    received_at: float = 0.0
    updated_at: float = 0.0
    attempts: int = 0
    due_at: float | None = None
    error: str | None = None


#: How many delivery attempts a store keeps per event (:meth:`EventStore.record_delivery`): the newest ones.
MAX_DELIVERIES = 50


class DeliveryAttempt(NamedTuple):
    """One delivery of a known event, or one replay of it, as :meth:`EventStore.record_delivery` keeps it.

    The first delivery of an event is not recorded (it would cost every
    delivery a write): the event's row tells it (its received time, the
    attempt number upstream sent, kept in the body, and the answer its
    outcome implies). What is recorded is every later one: a redelivery
    from upstream or from a queue, answered ``duplicate``, ``in_progress``,
    ``processed`` or ``failed``, and each replay.

    :param at: when it came (epoch seconds).
    :param via: how: ``"webhook"``, a queue's transport (``"stomp"``,
        ``"sqs"``), or ``"replay"``.
    :param attempt: the attempt number upstream or the queue gave, if any.
    :param code: the HTTP status answered, for a webhook; else ``None``.
    :param answer: the word answered or the replay's result (``"duplicate"``,
        ``"in_progress"``, ``"processed"``, ``"failed"``, ``"accepted"``, ...).
    :param by: who replayed it, when the inbox's access check named them.
    """

    at: float
    via: str
    attempt: int | None
    code: int | None
    answer: str
    by: str | None = None


def dump_delivery(attempt: DeliveryAttempt) -> str:
    """A delivery attempt as the JSON text stores keep."""
    return fastjson.dumps(list(attempt))


#: What :func:`load_delivery` answers for an entry it cannot read (written by another version, or damaged).
DAMAGED_DELIVERY = "a damaged entry of the delivery log (unreadable)"


def load_delivery(text: str | bytes) -> DeliveryAttempt:
    """The delivery attempt kept by :func:`dump_delivery`.

    The log is a record for people, read where they go to act (the inbox's
    event page, ``flask webhooks show``): an entry it cannot read is one
    line saying so (:data:`DAMAGED_DELIVERY`), never an error.
    """
    try:
        at, via, attempt, code, answer, *by = fastjson.loads(text)
        return DeliveryAttempt(
            float(at),
            str(via),
            None if attempt is None else int(attempt),
            None if code is None else int(code),
            str(answer),
            str(by[0]) if by and by[0] is not None else None,
        )
    except (ValueError, TypeError):  # JSON errors are ValueErrors; a wrong shape, either
        return DeliveryAttempt(0.0, "unknown", None, None, DAMAGED_DELIVERY)


class HourCount(NamedTuple):
    """The events received in one hour (UTC), as :meth:`EventStore.count_by_hour` counts them.

    :param start: the hour's start (epoch seconds, a multiple of 3600).
    :param received: how many events were received in it (each once, however often delivered).
    :param failed: how many of those are failed now.
    """

    start: float
    received: int
    failed: int


class BacklogStats(NamedTuple):
    """What waits and what failed, as :meth:`EventStore.backlog_stats` reads it.

    :param due: events due now, as :meth:`EventStore.count_due` counts them:
        pending and due, or taken from the queue with a lease that ran out.
    :param oldest_due_at: when the event due the longest fell due (epoch
        seconds, on this process's clock): a pending event's due time, or
        when the lease of an event taken over from a dead worker ran out;
        ``None`` when nothing is due.
    :param failed: events left failed (:attr:`EventStatus.FAILED`; resolved
        ones are not counted).
    """

    due: int
    oldest_due_at: float | None
    failed: int


def prunable(include_failed: bool) -> tuple[EventStatus, ...]:
    """The statuses :meth:`EventStore.prune` forgets: resolved events go with failed ones, when asked."""
    if include_failed:
        return (EventStatus.PROCESSED, EventStatus.FAILED, EventStatus.RESOLVED)
    return (EventStatus.PROCESSED,)


def hour_start(epoch: float) -> float:
    """The start of the UTC hour that *epoch* falls in."""
    return float(math.floor(epoch / 3600) * 3600)


def finished_status(ok: bool, retry_at: float | None) -> EventStatus:
    """The status :meth:`EventStore.finish` writes: processed, pending again (a retry is due), or failed."""
    if ok:
        return EventStatus.PROCESSED
    return EventStatus.PENDING if retry_at is not None else EventStatus.FAILED


def leaves_to_queue(claim: Claim, ok: bool, retry_at: float | None) -> bool:
    """Whether :meth:`EventStore.finish` of *claim* must look whether the event is the queue's.

    True for a failed run without ``retry_at`` of a claim that is not the
    queue's (:attr:`Claim.by_queue`): the event goes back to the queue,
    ``pending`` and due now, if it came through it (it was accepted, and a
    202 answered, before or while *claim* held it), and is ``failed``
    otherwise (no 202 was given: upstream's retry runs it again). Stores
    take that branch only then, so that every other finish, and first of
    all a success, costs what it did.
    """
    return not ok and retry_at is None and not claim.by_queue


def dump_outcomes(outcomes: Mapping[str, HandlerOutcome]) -> str:
    """Outcomes as the JSON text stores keep."""
    return fastjson.dumps(
        {
            name: [o.ok, o.error, o.attempts, o.started_at, o.finished_at] + ([o.skipped] if o.skipped else [])
            for name, o in outcomes.items()
        }
    )


def load_raw(text: str | bytes) -> Any:
    """A stored body; one that does not decode is handed on as text, for the worker to report unreadable."""
    try:
        return fastjson.loads(text)
    except ValueError:
        return text.decode(errors="replace") if isinstance(text, bytes) else text


def load_outcomes(text: str | bytes | None) -> dict[str, HandlerOutcome]:
    """The outcomes kept by :func:`dump_outcomes`."""
    if not text:
        return {}
    return {
        name: HandlerOutcome(
            name,
            bool(fields[0]),
            fields[1],
            int(fields[2]),
            float(fields[3]),
            float(fields[4]),
            fields[5] if len(fields) > 5 else None,
        )
        for name, fields in fastjson.loads(text).items()
    }


class HandlerTransaction(ABC):
    """The transaction of one transactional handler: its writes and its outcome commit together."""

    @abstractmethod
    def commit(self, claim: Claim, run: Run, *, finish: bool) -> bool:
        """Check under a row lock that *claim* still holds its lease, write *run*, and commit.

        :param finish: also mark the event processed and end the lease (the
            handler was the last to run and every handler has succeeded).
        :returns: ``False`` when the lease was taken over: everything, the
            handler's writes included, is rolled back.
        :raises StoreUnavailable: if the database cannot take it (rolled back).
        """

    @abstractmethod
    def rollback(self) -> None:
        """Undo the handler's writes (it raised)."""


class EventStore(ABC):
    """Where events, their queue and handler outcomes are kept; see the module docs for the protocol.

    :param lease_seconds: how long a claim stays exclusive unless renewed.
        After that, a worker that died mid-handler no longer blocks the event.
    """

    #: A short name for messages, such as ``"memory"``.
    name: str = "store"
    #: Whether accepted events outlive the process: background dispatch warns without it.
    durable: bool = True
    #: Who can reach the events: ``"process"`` (Celery dispatch refuses the
    #: store), ``"machine"`` (it warns) or ``"network"``.
    reach: str = "network"
    #: Whether :meth:`begin_handler` works: handlers registered with
    #: ``transactional=True`` need it.
    transactional: bool = False
    #: The receiver whose events this store object reads and writes; see :meth:`for_receiver`.
    receiver: str = DEFAULT_RECEIVER

    def __init__(self, *, lease_seconds: float = 60.0) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.lease_seconds = lease_seconds
        _LIVE_STORES.add(self)

    # -- several receivers, several processes ------------------------------------------

    def for_receiver(self, receiver: str) -> EventStore:
        """This store's storage as the receiver named *receiver* sees it.

        Several receivers (of one app or of several) may share one store, as
        one URL or one instance: each sees only its own events, its own queue
        and its own watermarks, so that one receiver never runs, lists or
        prunes another's events. ``init_app`` calls this with the receiver's
        name. The store returned shares this one's connections; it is *self*
        when *receiver* is already this store's.

        The default makes a shallow copy with :attr:`receiver` set; a store
        whose storage is not keyed by :attr:`receiver` overrides it.
        """
        if receiver == self.receiver:
            return self
        other = copy.copy(self)
        other.receiver = receiver
        _LIVE_STORES.add(other)
        return other

    def after_fork(self) -> None:
        """Drop what the parent process held: connections, pools, locks, threads' state.

        Called in every child process that ``os.fork`` makes while this store
        exists (``gunicorn --preload`` builds the app, and so its stores, in the
        master, then forks the workers): a connection or a lock shared with the
        parent would mix the two processes' traffic or deadlock. The store must
        be usable in the child afterwards, opening what it needs again.
        """

    # -- taking events -------------------------------------------------------------

    @abstractmethod
    def claim(self, event: Event) -> Claim:
        """Take *event* for processing now, atomically, storing it if it is new.

        Used in the request (inline dispatch) and by ``flask webhooks replay``:
        a pending or failed event, or one whose lease ran out, is taken.

        :raises StoreUnavailable: if the store cannot answer.
        """

    @abstractmethod
    def claim_due(self) -> Claim | None:
        """Take the event due the longest (or whose lease ran out longest ago), if any.

        Only events that came through the queue (:meth:`accept`, including a
        redelivery accepted while a request held the event) are taken over
        when their lease runs out: an event only ever claimed in a request
        (:meth:`claim`) answered upstream no 2xx, and upstream's retry takes
        it over.

        :returns: a ``CLAIMED`` claim carrying the event's trigger and body,
            :attr:`~Claim.by_queue` set, or ``None`` when nothing is due.
        :raises StoreUnavailable: if the store cannot answer.
        """

    @abstractmethod
    def accept(self, event: Event) -> EventStatus | None:
        """Make *event* durable, pending and due now, for a background dispatcher.

        A failed event is made due again (an upstream redelivery buys one more
        run). An event held by a claim taken with :meth:`claim` (a request
        that may have died) joins the queue: once its lease runs out,
        :meth:`claim_due` takes it over, as it does any accepted event, so
        the 202 this answers is kept; should that request's run fail instead,
        :meth:`finish` leaves the event pending, for the queue. Any other
        stored event is left as it is.

        :returns: ``None`` when the event is new, else the status it had.
        :raises StoreUnavailable: if the store cannot take it.
        """

    @abstractmethod
    def count_due(self) -> int:
        """How many events are due now: pending and due, or taken from the queue with a lease that ran out.

        :raises StoreUnavailable: if the store cannot answer.
        """

    def backlog_stats(self) -> BacklogStats:
        """The due events, when the oldest fell due, and the failed events: for the metrics and health checks.

        Every store of this library answers from its indexes (a few counts
        and minimums, each in O(log n) or a walk of the due or failed events
        only), so that it can be asked every few seconds of a store holding
        many events. The default counts with :meth:`count_due` and reads the
        rest from :meth:`events` listings by status, which walk every pending
        and failed event: it knows only pending events' due times (an event
        whose lease ran out adds to :attr:`~BacklogStats.due` alone). A store
        of your own should override it.

        :raises StoreUnavailable: if the store cannot answer.
        """
        now = time.time()
        due = self.count_due()
        due_times = [e.due_at for e in self.events(status=EventStatus.PENDING) if e.due_at is not None]
        oldest = min((t for t in due_times if t <= now), default=None)
        return BacklogStats(due, oldest, len(self.events(status=EventStatus.FAILED)))

    # -- writes under a claim (fenced) --------------------------------------------

    @abstractmethod
    def renew(self, claim: Claim) -> bool:
        """Extend the lease of *claim* by :attr:`lease_seconds` from now.

        :returns: ``False`` when the lease was taken over (the claim is lost).
        :raises StoreUnavailable: if the store cannot answer.
        """

    @abstractmethod
    def record(self, claim: Claim, run: Run) -> bool:
        """Keep the outcome of one handler run, before the next handler starts.

        :returns: ``False``, writing nothing, when the lease was taken over.
        :raises StoreUnavailable: if the store cannot take it.
        """

    @abstractmethod
    def finish(
        self,
        claim: Claim,
        *,
        ok: bool,
        last: Run | None = None,
        retry_at: float | None = None,
        error: str | None = None,
    ) -> bool:
        """End the run: write *last*, the event's status, and end the lease.

        The status is ``processed`` when *ok*; else ``pending`` and due at
        *retry_at* when it is given, else ``failed``: except for a claim that
        is not the queue's (:attr:`Claim.by_queue`, see
        :func:`leaves_to_queue`) on an event that came through the queue
        (:meth:`accept` answered it, before or while the claim held it),
        which is left ``pending`` and due now, its outcomes and *error*
        written, for the queue to run again (:attr:`Claim.requeued` is then
        set), in the same fenced write: a 202 was answered for it, and
        nothing else would retry it. A finish that leaves the event
        ``failed`` forgets that it came through the queue: a later failed
        claim of it is ``failed`` too, until :meth:`accept` answers it again.

        :param ok: whether every handler has succeeded.
        :param last: the last handler run, recorded in the same write.
        :param retry_at: when a failed event is due again (epoch seconds).
        :param error: why the event failed without running (kept on the event).
        :returns: ``False``, writing nothing, when the lease was taken over.
        :raises StoreUnavailable: if the store cannot take it.
        """

    # -- several events at once (queue consumers) ---------------------------------------

    def claim_many(self, events: Sequence[Event]) -> list[Claim]:
        """:meth:`claim` each of *events*, in order: the claims, one for each.

        A queue consumer claims the messages it holds in one call; a store
        that can do it in one transaction (SQLite) overrides this. The
        default calls :meth:`claim` for each, so every store takes part; if
        one raises, the claims already taken keep their lease until it runs
        out (as after a crash: nothing is lost, the event is busy meanwhile).

        :raises StoreUnavailable: if the store cannot answer.
        """
        return [self.claim(event) for event in events]

    def finish_many(self, finished: Sequence[tuple[Claim, Run | None]]) -> list[bool]:
        """Finish each ``(claim, last run)`` of *finished* as processed: :meth:`finish` with ``ok=True`` for each.

        The counterpart of :meth:`claim_many`: the outcomes of the events a
        consumer ran, written together. Each write is fenced as
        :meth:`finish`'s is. The default calls :meth:`finish` for each; it
        is safe to call again after a refusal (a write already taken is then
        refused by its fence, and reported ``False``).

        :returns: for each, whether it was written (``False``: its lease was taken over).
        :raises StoreUnavailable: if the store cannot take them.
        """
        return [self.finish(claim, ok=True, last=last) for claim, last in finished]

    # -- the out-of-order guard ---------------------------------------------------------

    @abstractmethod
    def watermark(self, handler: str, resource_type: str, resource_id: str) -> float | None:
        """The newest ``updated_at`` (epoch seconds) of the resource that *handler* handled, or ``None``.

        :raises StoreUnavailable: if the store cannot answer.
        """

    @abstractmethod
    def raise_watermark(self, handler: str, resource_type: str, resource_id: str, updated_at: float) -> bool:
        """Keep *updated_at* as the resource's watermark for *handler*, unless a newer one is kept: atomically.

        This is a compare-and-set: of two callers racing with an older and a
        newer time, the older one is told ``False`` whichever writes first, so
        that the check before a ``latest_only`` handler runs and the mark it
        leaves are one step.

        :returns: ``True`` when the watermark is now *updated_at* (it was
            unset, older or the same), ``False`` when a newer one is kept
            (nothing written).
        :raises StoreUnavailable: if the store cannot take it.
        """

    # -- reading and housekeeping -------------------------------------------------------

    @abstractmethod
    def get(self, event_id: str) -> StoredEvent | None:
        """The stored event with this id, or ``None``.

        :raises StoreUnavailable: if the store cannot answer.
        """

    @abstractmethod
    def events(
        self,
        *,
        status: EventStatus | None = None,
        trigger: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        before: tuple[float, str] | None = None,
    ) -> list[StoredEvent]:
        """Stored events, newest first (by ``received_at``, then ``id``, both descending), filtered.

        :param status: only events with this status.
        :param trigger: only events with this trigger.
        :param since: only events received at or after this time (epoch seconds).
        :param limit: at most this many.
        :param before: only events strictly older than this ``(received_at, id)``
            key, in the order above: the key of the last event of one page
            gives the next page (keyset paging), without reading the newer
            events again. A store written before this parameter existed may
            not take it; the inbox then pages by reading batches.
        :raises StoreUnavailable: if the store cannot answer.
        """

    def resolve(self, event_id: str) -> bool:
        """Mark a failed event resolved (:attr:`EventStatus.RESOLVED`): an operator settled it.

        The event is kept, with its body and outcomes; it leaves the failed
        view and ``replay --failed``, and :meth:`prune` forgets it only with
        ``include_failed``. Only a failed event is changed.

        The default raises :class:`NotImplementedError`: every store of this
        library overrides it; a store of your own should, with one atomic
        write (a compare-and-set on the status).

        :returns: ``True`` when the event was failed and is resolved now,
            ``False`` when there is no such event or it is not failed.
        :raises StoreUnavailable: if the store cannot answer.
        :raises NotImplementedError: if the store cannot.
        """
        raise NotImplementedError(f"the {self.name} store cannot mark events resolved")

    def count_by_hour(self, since: float) -> list[HourCount]:
        """The events received since *since*, counted per UTC hour, in one query.

        :returns: one :class:`HourCount` per hour that received an event,
            oldest first; hours without events are left out.
        :raises StoreUnavailable: if the store cannot answer.
        :raises NotImplementedError: the default: every store of this
            library overrides it; without it the inbox's chart counts what
            :meth:`events` returns.
        """
        raise NotImplementedError(f"the {self.name} store cannot count events by hour")

    def record_delivery(self, event_id: str, attempt: DeliveryAttempt) -> None:
        """Append *attempt* to the delivery log of the event *event_id*, keeping its newest :data:`MAX_DELIVERIES`.

        Called on the cold paths only (a redelivery of a known event, a
        queue's redelivery, a replay), never for an event's first delivery,
        so that the hot path has no write more. The stores of this library
        keep the log beside the event, per receiver, and forget it with the
        event (:meth:`prune`).

        The default keeps it in this process, for the last 10,000 events
        (lost on restart, not shared between processes): a store of your own
        should override it and :meth:`deliveries`.

        :raises StoreUnavailable: if the store cannot take it.
        """
        key = (self.receiver, event_id)
        with _DEFAULT_LOG.lock:
            log = self.__dict__.setdefault("_default_delivery_log", OrderedDict())
            kept = log.pop(key, None) or deque(maxlen=MAX_DELIVERIES)
            kept.append(attempt)
            log[key] = kept
            while len(log) > _DEFAULT_LOG_EVENTS:
                log.popitem(last=False)

    def deliveries(self, event_id: str) -> list[DeliveryAttempt]:
        """The recorded delivery attempts of the event *event_id*, oldest first (see :meth:`record_delivery`).

        :returns: an empty list for an event with none (or unknown).
        :raises StoreUnavailable: if the store cannot answer.
        """
        with _DEFAULT_LOG.lock:
            log = self.__dict__.get("_default_delivery_log")
            return list(log.get((self.receiver, event_id), ())) if log is not None else []

    def change_marker(self) -> str | None:
        """A text that changes whenever this store's events may have changed, cheaper than any listing: or ``None``.

        The inbox's live list asks for it on each poll and answers ``304``
        while it is the same, without reading the list. It may change when
        nothing of this receiver changed (a write of another receiver, or of
        anything else in the same database): then the list is read as
        without it. It must never stay the same across a change: a marker
        that cannot promise that is ``None``, the default (every poll reads
        the list). Nothing on the delivery path may be written for it.

        :raises StoreUnavailable: if the store cannot answer.
        """
        return None

    @abstractmethod
    def prune(self, before: float, *, include_failed: bool = False, dry_run: bool = False) -> int:
        """Forget processed events received before *before* (and failed ones, with *include_failed*).

        Pending and processing events are never pruned; failed ones are kept
        by default, since they were never handled.

        :param dry_run: count them, forget nothing.
        :returns: how many were (or would be) forgotten.
        :raises StoreUnavailable: if the store cannot answer.
        """

    def bind(self, app: Any) -> None:
        """Serve *app* (``init_app`` calls it): a store may need the app to find its database."""

    def adopt_earlier_data(self) -> None:
        """Take what an earlier version left to no receiver, as this view's receiver (the app's first).

        ``init_app`` calls it for the first receiver set up on an app, before
        any other receiver of the app can write: an earlier version kept one
        receiver's data where no receiver was named, and that receiver was
        the app's first. Never raises: a store that cannot answer leaves it
        to the first write (and :meth:`leave_earlier_data_to` tells the
        app's other receivers whose it is).
        """

    def leave_earlier_data_to(self, first: EventStore) -> None:
        """Leave what an earlier version left to no receiver to *first*'s receiver, the app's first, with no I/O.

        ``init_app`` calls it for every other receiver set up on an app, with
        the first receiver's store, so that where both keep their events in
        the same place and the first could not adopt that data at its start
        (the store did not answer), it never goes to this one, whichever of
        them writes or reads first. A store elsewhere than *first* is left alone.
        """

    def begin_handler(self, claim: Claim) -> HandlerTransaction:
        """Open the transaction a transactional handler writes in (stores with :attr:`transactional`).

        :raises NotImplementedError: if the store cannot.
        """
        raise NotImplementedError(f"the {self.name} store cannot run transactional handlers")

    @property
    def location(self) -> str:
        """Where the events are, for messages (a path, a URL with no password)."""
        return repr(self)

    def close(self) -> None:
        """Release connections; the store may be used again afterwards."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} lease_seconds={self.lease_seconds}>"


class _DefaultLogLock:
    """The lock of :meth:`EventStore.record_delivery`'s default log: a new one in a forked child."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


_DEFAULT_LOG = _DefaultLogLock()
_DEFAULT_LOG_EVENTS = 10_000


#: Every store object alive in this process, told by :func:`_reset_after_fork` that it is in a child.
_LIVE_STORES: weakref.WeakSet[EventStore] = weakref.WeakSet()


class _Tokens:
    """Fencing tokens: a random prefix drawn once per process (again in a forked child) and a counter.

    Unique across processes and machines as :func:`secrets.token_hex` is (the
    prefix is 16 random bytes), without its system call on every claim.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = secrets.token_hex(16) + "-"
        self.counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter)}"  # next() on a count is atomic under the GIL


#: A new fencing token for a lease, unique across processes: ``new_token()``.
new_token = _Tokens()


def _reset_after_fork() -> None:
    new_token.reset()  # a child must never hand out its parent's tokens
    _DEFAULT_LOG.lock = threading.Lock()  # one a parent thread held at fork time would never be released
    for store in list(_LIVE_STORES):
        store.after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_reset_after_fork)
