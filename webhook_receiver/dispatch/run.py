"""Running the handlers of a claimed event, each in its own error handling.

:func:`run_handlers` runs the handlers of a claimed event, its lease kept
alive by the heartbeat; every dispatcher uses it. :func:`run_claimed` is one
background run of an event taken from the queue: rebuild, run, and finish
with the next due time or for good. :func:`process_stored` runs a stored
event here and now (``flask webhooks replay``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Sequence, TypeVar

from .. import instrumentation, signals
from ..errors import StoreUnavailable
from ..events import Event
from ..handlers import Handler, HandlerSource
from ..stores.base import Claim, ClaimState, DeliveryAttempt, EventStore, Run
from ..untrusted import logger
from .lease import HEARTBEAT

if TYPE_CHECKING:
    from ..instrumentation import Observer, RunCounter
    from .base import RetryPolicy

__all__ = [
    "HandlersRun",
    "RunState",
    "describe",
    "finish_durably",
    "finish_now",
    "finish_run",
    "log_delivery",
    "process_stored",
    "run_claimed",
    "run_inline_claim",
    "run_handlers",
    "run_now",
    "write_durably",
]

#: What keeps the lease when the caller keeps it already.
_NOT_KEPT: ContextManager[Any] = contextlib.nullcontext()

T = TypeVar("T")


#: The longest error text kept for a failed handler.
MAX_ERROR_LENGTH = 500

#: Seconds a write the store cannot take is tried again in the request (inline dispatch, ``replay``):
#: about upstream's timeout, and never past the lease, within which no one else runs the event.
REQUEST_PATIENCE = 10.0


@dataclass
class HandlersRun:
    """What :func:`run_handlers` did.

    :param failed: the names of the handlers that raised.
    :param last: the last handler run, not yet written (it goes with ``finish``).
    :param lost: the lease was taken over: nothing more may be written.
    :param finished: the last handler was transactional and its transaction
        also marked the event processed: there is nothing left to finish.
    """

    failed: list[str]
    last: Run | None
    lost: bool = False
    finished: bool = False


def run_handlers(
    sender: Any,
    event: Event,
    handlers: Sequence[Handler],
    store: EventStore,
    claim: Claim,
    *,
    receiver: HandlerSource,
    stopping: threading.Event | None = None,
    patience: float | None = None,
    kept: bool = False,
    watchers: Sequence[Observer] | None = None,
) -> HandlersRun:
    """Run each handler that has not yet succeeded for *event*, keeping the lease alive.

    Each outcome is written (fenced by the claim) before the next handler
    starts; the last one is left for the caller's ``finish``. A write the
    store cannot take yet is tried again (:func:`write_durably`), so that a
    handler that ran is never run again for want of its record. A handler
    that raises is logged and reported through
    :data:`~webhook_receiver.signals.handler_failed`; the others still run.
    Once the lease is found taken over, no further handler starts.

    A ``latest_only`` handler first takes the resource's watermark with
    :meth:`EventStore.raise_watermark`, a compare-and-set: refused (a newer
    event of the resource came first), the handler is skipped, the reason
    recorded as its outcome.

    :param sender: the Flask app, passed to signal receivers.
    :param event: the event.
    :param handlers: every handler for its trigger, in order.
    :param store: the store holding *claim*.
    :param claim: a ``CLAIMED`` claim on *event*.
    :param receiver: the receiver, passed to lifecycle signals.
    :param stopping: set when the process stops: a write still refused then
        is given up (background dispatch).
    :param patience: give up a write still refused after this many seconds
        (dispatch in the request); ``None``: until *stopping*.
    :param kept: the caller keeps the lease alive already (a consumer's
        batch, from its claim to its finish): no heartbeat of its own.
    :param watchers: the observers watching runs
        (:func:`~webhook_receiver.instrumentation.run_watchers`), when the
        caller asked once for several events.
    :raises StoreUnavailable: if an outcome cannot be written before
        *stopping* or *patience* says to give up.
    """
    failed: list[str] = []
    previous: Run | None = None
    if claim.outcomes:
        succeeded = claim.succeeded
        pending = [handler for handler in handlers if handler.name not in succeeded]
    else:  # the first run: every handler
        pending = list(handlers)

    def durably(write: Callable[[], T], what: str) -> T:
        return write_durably(write, event_id=event.id, what=what, stopping=stopping, patience=patience)

    if watchers is None:
        watchers = instrumentation.run_watchers(sender)
    pending = instrumentation.observed_handlers(sender, receiver.name, pending, watchers=watchers)
    counters = instrumentation.run_counters(sender)
    keeping = _NOT_KEPT if kept else HEARTBEAT.keep(store, claim)
    with keeping, instrumentation.running(sender, receiver.name, event, claim, watchers=watchers):
        for position, handler in enumerate(pending, 1):
            if previous is not None:
                recorded = durably(partial(store.record, claim, previous), f"the outcome of {previous.name}")
                if claim.lost or not recorded:
                    return _lost(event, claim, failed)
            previous = None
            started = time.time()
            mark = _watermark_key(handler, event) if handler.latest_only else None
            if mark is not None:
                skip = durably(partial(_take_watermark, store, handler, mark), f"the watermark of {handler.name}")
                if skip is not None:
                    previous = Run(handler.name, True, None, started, time.time(), skip)
                    logger.info("handler %s skipped event %s (%s): %s", handler.name, event.id, event.trigger, skip)
                    continue
            if handler.transactional:
                last = position == len(pending) and not failed
                outcome = _run_in_transaction(sender, event, handler, store, claim, started, last, receiver)
                if outcome is None:
                    return _lost(event, claim, failed)
                if counters:
                    _counted(counters, receiver, event, outcome)
                if not outcome.ok:
                    failed.append(handler.name)
                    previous = outcome  # recorded in a transaction of its own, as any failure
                if last and outcome.ok:
                    return HandlersRun(failed, None, finished=True)
                continue
            try:
                handler(sender, event)
            except Exception as exc:
                failed.append(handler.name)
                previous = _failed(sender, event, handler, exc, started, receiver)
            else:
                previous = Run(handler.name, True, None, started, time.time())
            if counters:
                _counted(counters, receiver, event, previous)
    if claim.lost:
        return _lost(event, claim, failed)
    return HandlersRun(failed, previous)


def _counted(counters: Sequence[RunCounter], receiver: HandlerSource, event: Event, run: Run) -> None:
    """Tell the counters of the app of *run* (its own clock's times: a step back counts as 0 s)."""
    seconds = max(0.0, run.finished_at - run.started_at)
    instrumentation.handler_ran(counters, receiver.name, event, run.name, run.ok, seconds)


def _failed(
    sender: Any, event: Event, handler: Handler, exc: Exception, started: float, receiver: HandlerSource
) -> Run:
    """Log and signal a handler that raised; its run, to record."""
    logger.error(
        "handler %s failed on event %s (%s, attempt %d)",
        handler.name,
        event.id,
        event.trigger,
        event.attempt,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    signals.send_isolated(
        signals.handler_failed, sender, event=event, handler=handler.name, exception=exc, receiver=receiver
    )
    return Run(handler.name, False, describe(exc), started, time.time())


def _run_in_transaction(
    sender: Any,
    event: Event,
    handler: Handler,
    store: EventStore,
    claim: Claim,
    started: float,
    last: bool,
    receiver: HandlerSource,
) -> Run | None:
    """Run a transactional handler: its writes and its outcome commit together, or not at all.

    :returns: the run (a success is already written; a failure is for the
        caller to record), or ``None`` when the lease was found taken over
        (everything rolled back).
    :raises StoreUnavailable: if the transaction cannot be opened or committed.
    """
    try:
        transaction = store.begin_handler(claim)
    except NotImplementedError as exc:  # init_app and on() refuse this; a store swapped since would get here
        return _failed(sender, event, handler, exc, started, receiver)
    try:
        handler(sender, event)
    except Exception as exc:
        transaction.rollback()
        return _failed(sender, event, handler, exc, started, receiver)
    except BaseException:
        transaction.rollback()
        raise
    run = Run(handler.name, True, None, started, time.time())
    if not transaction.commit(claim, run, finish=last):
        return None
    return run


def _watermark_key(handler: Handler, event: Event) -> tuple[str, str, float] | None:
    """``(resource type, resource id, updated_at)`` when *handler* guards against old events and *event* can tell."""
    if not handler.latest_only:
        return None
    updated_at = event.updated_at
    data = event.data
    if updated_at is None or not isinstance(data, dict):
        return None
    resource_type, resource_id = data.get("type"), data.get("id")
    if not isinstance(resource_type, str) or not isinstance(resource_id, str):
        return None
    return resource_type, resource_id, updated_at.timestamp()


def _take_watermark(store: EventStore, handler: Handler, mark: tuple[str, str, float]) -> str | None:
    """Take the resource's watermark for *handler* before it runs: why it skips this event, or ``None``.

    The take is the store's compare-and-set, so that of an older and a newer
    event racing, the older one is refused whichever asks first; a retry of
    the same event passes (its time equals the mark).

    A store written before :meth:`~EventStore.raise_watermark` answered
    (it returns ``None``) raised the mark if it was older, atomically;
    reading it back then tells the same: the older of two events is refused
    unless its mark was taken before the newer one arrived.
    """
    resource_type, resource_id, updated_at = mark
    taken: bool | None = store.raise_watermark(handler.name, resource_type, resource_id, updated_at)
    if taken:
        return None
    held = store.watermark(handler.name, resource_type, resource_id)
    if taken is None and (held is None or updated_at >= held):  # a store from before: the mark read back is ours
        return None
    newest = "a newer time" if held is None else datetime.fromtimestamp(held, timezone.utc).isoformat()
    newest = newest.replace("+00:00", "Z")
    return f"{resource_type} {resource_id} was already handled as of {newest}, newer than this event"


def _lost(event: Event, claim: Claim, failed: list[str]) -> HandlersRun:
    claim.lost = True
    logger.warning(
        "event %s (%s): the lease was taken over by another worker; this run stops and records nothing more",
        event.id,
        event.trigger,
    )
    return HandlersRun(failed, None, lost=True)


def describe(exc: BaseException) -> str:
    """``"ExceptionType: message"``, cut to :data:`MAX_ERROR_LENGTH` characters.

    :param exc: the exception a handler raised.
    """
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 3] + "..."
    return text


def write_durably(
    write: Callable[[], T],
    *,
    event_id: str,
    what: str,
    stopping: threading.Event | None = None,
    patience: float | None = None,
) -> T:
    """``write()``, called again while the store cannot answer (:class:`StoreUnavailable`).

    What the handlers did must not be lost to a store that is briefly locked
    or down: the write is tried again, with backoff up to 2 s, until the
    store answers (taken or refused: the caller reads the answer), or
    *stopping* is set, or *patience* seconds have passed since the first
    refusal.

    :param write: one store write; it must be safe to repeat (every write
        under a claim is: fenced, and idempotent for the same run).
    :param event_id: the event, for the log.
    :param what: what is written, for the log.
    :param stopping: set when the process stops (background dispatch).
    :param patience: how long to keep trying, in seconds (dispatch in the
        request: within the claim's lease, no one else runs the event);
        ``None``: until the store answers or *stopping* is set.
    :returns: what *write* returned.
    :raises StoreUnavailable: the last refusal, once *stopping* is set or
        *patience* has run out.
    """
    pause = 0.05
    give_up_at = None if patience is None else time.monotonic() + patience
    while True:
        try:
            return write()
        except StoreUnavailable as exc:
            if stopping is not None and stopping.is_set():
                logger.error(
                    "event %s: giving up writing %s at shutdown (%s); it runs again once its lease runs out",
                    event_id,
                    what,
                    exc,
                )
                raise
            if give_up_at is not None and time.monotonic() + pause > give_up_at:
                logger.error("event %s: giving up writing %s after %.1f s (%s)", event_id, what, patience, exc)
                raise
            logger.warning("event %s: cannot write %s yet (%s); trying again in %.2f s", event_id, what, exc, pause)
            if stopping is not None:
                stopping.wait(pause)
            else:
                time.sleep(pause)
            pause = min(pause * 2, 2.0)


def finish_durably(store: EventStore, claim: Claim, *, stopping: threading.Event | None = None, **kwargs: Any) -> bool:
    """:meth:`EventStore.finish`, tried again while the store cannot answer (:func:`write_durably`).

    :param stopping: set when the process stops: the write is given up.
    :param kwargs: the arguments of :meth:`EventStore.finish`.
    :returns: whether the write was taken (``False``: the lease was taken
        over, or the process stops).
    """
    try:
        taken = write_durably(
            lambda: store.finish(claim, **kwargs), event_id=claim.event_id, what="its outcome", stopping=stopping
        )
    except StoreUnavailable:  # only once stopping
        return False
    if not taken:
        claim.lost = True
        logger.warning(
            "event %s: the lease was taken over by another worker before this run finished;"
            " its outcome is not recorded",
            claim.event_id,
        )
    return taken


#: The states :func:`run_claimed` reports.
RunState = str


def run_claimed(
    app: Any,
    receiver: HandlerSource,
    store: EventStore,
    claim: Claim,
    policy: RetryPolicy,
    *,
    stopping: threading.Event | None = None,
) -> tuple[RunState, float | None]:
    """One background run of an event taken with :meth:`EventStore.claim_due`, in an app context.

    A body that cannot be rebuilt marks the event failed with the reason. A
    failed run is finished with the next due time from *policy*
    (:data:`~webhook_receiver.signals.event_retrying`), or for good
    (:data:`~webhook_receiver.signals.event_failed`).

    :returns: ``"processed"``, ``"retrying"``, ``"failed"``, ``"unreadable"``
        or ``"lost"``, and the pause before the next run, if there is one.
    :raises StoreUnavailable: if an outcome cannot be written.
    """
    # The stores of this library set it in claim_due; a subclass of one whose claim_due builds its own claims
    # may not, and its finish would then leave a failure past the policy's last attempt due again, for ever.
    claim.by_queue = True
    try:
        event = Event.from_stored(claim.raw)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - whatever it is, it must not block the queue
        reason = f"the stored body cannot be rebuilt: {describe(exc)}"
        if finish_durably(store, claim, ok=False, error=reason, stopping=stopping):
            logger.error("event %s (%s) failed without running: %s", claim.event_id, claim.trigger, reason)
            stub = Event(id=claim.event_id, trigger=claim.trigger or "unknown.unknown")
            signals.send_isolated(
                signals.event_failed,
                app,
                event=stub,
                failed=[],
                attempts=claim.attempt,
                error=reason,
                receiver=receiver,
            )
            return "unreadable", None
        return "lost", None

    handlers = receiver.handlers_for(event.trigger, app)
    result = run_handlers(app, event, handlers, store, claim, receiver=receiver, stopping=stopping)
    return finish_run(app, receiver, store, event, claim, result, policy, stopping=stopping)


def finish_run(
    app: Any,
    receiver: HandlerSource,
    store: EventStore,
    event: Event,
    claim: Claim,
    result: HandlersRun,
    policy: RetryPolicy,
    *,
    stopping: threading.Event | None = None,
) -> tuple[RunState, float | None]:
    """Finish a background run of *event* after :func:`run_handlers`: processed, due again, or failed for good.

    The second half of :func:`run_claimed`, and what an inline run that
    passed its deadline (answered 202) does when its handlers end.

    :returns: as :func:`run_claimed`.
    :raises StoreUnavailable: if an outcome cannot be written.
    """
    if result.lost:
        return "lost", None
    if not result.failed:
        if not result.finished and not finish_durably(store, claim, ok=True, last=result.last, stopping=stopping):
            return "lost", None
        signals.send_isolated(signals.event_handled, app, event=event, receiver=receiver)
        return "processed", None

    delay = policy.delay(claim.attempt)
    retry_at = None if delay is None else time.time() + delay
    if not finish_durably(store, claim, ok=False, last=result.last, retry_at=retry_at, stopping=stopping):
        return "lost", None
    failing = ", ".join(result.failed)
    if delay is None:
        logger.error(
            "event %s (%s) failed for good after %d runs; handlers failing: %s."
            " `flask webhooks replay %s` runs them again",
            event.id,
            event.trigger,
            claim.attempt,
            failing,
            event.id,
        )
        signals.send_isolated(
            signals.event_failed,
            app,
            event=event,
            failed=result.failed,
            attempts=claim.attempt,
            error=None,
            receiver=receiver,
        )
        return "failed", None
    logger.warning(
        "event %s (%s): %s failed on run %d; due again in %.1f s",
        event.id,
        event.trigger,
        failing,
        claim.attempt,
        delay,
    )
    signals.send_isolated(
        signals.event_retrying,
        app,
        event=event,
        failed=result.failed,
        attempt=claim.attempt,
        delay=delay,
        receiver=receiver,
    )
    return "retrying", delay


def run_now(
    sender: Any, receiver: HandlerSource, store: EventStore, event: Event, handlers: Sequence[Handler] | None = None
) -> tuple[RunState, list[str]]:
    """Claim *event*, run here and now the handlers that have not succeeded yet, and finish the claim.

    What inline dispatch does in the request, and ``flask webhooks replay``
    in the command.

    :param handlers: the event's handlers, when the caller already looked them up.
    :returns: ``"duplicate"``, ``"busy"`` (another worker holds the event, or
        took it over meanwhile), ``"processed"`` or ``"failed"``, and the
        names of the handlers that failed.
    :raises StoreUnavailable: if the store cannot answer.
    """
    return run_inline_claim(sender, receiver, store, event, store.claim(event), handlers)


def run_inline_claim(
    sender: Any,
    receiver: HandlerSource,
    store: EventStore,
    event: Event,
    claim: Claim,
    handlers: Sequence[Handler] | None = None,
) -> tuple[RunState, list[str]]:
    """:func:`run_now` with the claim already taken (its :attr:`~Claim.attempt` tells a redelivery)."""
    if claim.state is ClaimState.DONE:
        return "duplicate", []
    if claim.state is ClaimState.BUSY:
        return "busy", []
    if handlers is None:
        handlers = receiver.handlers_for(event.trigger, sender)
    patience = min(REQUEST_PATIENCE, store.lease_seconds)
    result = run_handlers(sender, event, handlers, store, claim, receiver=receiver, patience=patience)
    return finish_now(sender, receiver, store, event, claim, result, patience=patience)


def finish_now(
    sender: Any,
    receiver: HandlerSource,
    store: EventStore,
    event: Event,
    claim: Claim,
    result: HandlersRun,
    *,
    patience: float,
) -> tuple[RunState, list[str]]:
    """Finish an inline run of *event* after :func:`run_handlers`: the second half of :func:`run_now`.

    A failed run is left ``failed``: upstream's retry (or ``replay``) runs it
    again. An event that came through the queue meanwhile (a 202 answered for
    it elsewhere: a rolling deploy from inline to background dispatch) is left
    to the queue instead, pending (see :meth:`EventStore.finish`).

    :param patience: how long a write the store cannot take is tried again.
    :returns: as :func:`run_now`.
    :raises StoreUnavailable: if the outcome cannot be written within *patience*.
    """
    if result.lost:
        return "busy", result.failed
    if not result.finished and not _finish_now(store, claim, not result.failed, result.last, event.id, patience):
        logger.warning(
            "event %s: the lease was taken over by another worker before this run finished;"
            " its outcome is not recorded",
            event.id,
        )
        return "busy", result.failed
    if result.failed:
        if claim.requeued:
            logger.warning(
                "event %s (%s): %s failed; it came through the queue (a 202 was answered for it),"
                " so the queue runs it again",
                event.id,
                event.trigger,
                ", ".join(result.failed),
            )
        return "failed", result.failed
    signals.send_isolated(signals.event_handled, sender, event=event, receiver=receiver)
    return "processed", []


def _finish_now(store: EventStore, claim: Claim, ok: bool, last: Run | None, event_id: str, patience: float) -> bool:
    """:meth:`EventStore.finish` in the request: once, and through :func:`write_durably` if the store refuses."""
    started = time.monotonic()
    try:
        return store.finish(claim, ok=ok, last=last)
    except StoreUnavailable as exc:
        logger.warning("event %s: cannot write its outcome yet (%s); trying again", event_id, exc)
    return write_durably(  # within the patience left: the first attempt counts
        lambda: store.finish(claim, ok=ok, last=last),
        event_id=event_id,
        what="its outcome",
        patience=max(0.0, patience - (time.monotonic() - started)),
    )


class ProcessResult:
    """What :func:`process_stored` found or did.

    :param state: ``"processed"``, ``"failed"``, ``"duplicate"``, ``"busy"``,
        ``"missing"`` or ``"unreadable"``.
    :param event: the event, when it could be rebuilt.
    :param failed: the names of the handlers that failed.
    :param error: why the event could not be rebuilt.
    """

    __slots__ = ("state", "event", "failed", "error")

    def __init__(
        self, state: str, event: Event | None = None, failed: Sequence[str] = (), error: str | None = None
    ) -> None:
        self.state = state
        self.event = event
        self.failed = list(failed)
        self.error = error

    def __repr__(self) -> str:
        return f"<ProcessResult {self.state} failed={self.failed}>"


def process_stored(
    sender: Any, receiver: HandlerSource, store: EventStore, event_id: str, *, by: str | None = None
) -> ProcessResult:
    """Claim a stored event and run, here and now, the handlers that have not succeeded yet.

    The replay goes to the event's delivery log
    (:meth:`~webhook_receiver.stores.EventStore.record_delivery`).

    :param sender: the Flask app (an app context must be pushed).
    :param receiver: the receiver whose handlers run.
    :param store: where the event is.
    :param event_id: the event's id.
    :param by: who asked for the replay, for the log.
    :raises StoreUnavailable: if the store cannot answer.
    """
    stored = store.get(event_id)
    if stored is None:
        return ProcessResult("missing")
    try:
        event = Event.from_stored(stored.raw)
    except Exception as exc:  # noqa: BLE001 - reported, and the caller carries on
        result = ProcessResult("unreadable", error=describe(exc))
    else:
        state, failed = run_now(sender, receiver, store, event)
        result = ProcessResult(state, event, failed)
    log_delivery(store, event_id, DeliveryAttempt(time.time(), "replay", None, None, result.state, by))
    return result


def log_delivery(store: EventStore, event_id: str, attempt: DeliveryAttempt) -> None:
    """Add *attempt* to the event's delivery log; a store that cannot take it is logged, the answer stands."""
    try:
        store.record_delivery(event_id, attempt)
    except Exception as exc:  # noqa: BLE001 - the log is for the inbox: the delivery's answer is already decided
        logger.warning("event %s: its delivery attempt is not logged (%s)", event_id, describe(exc))
