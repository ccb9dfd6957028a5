"""Inline dispatch: the handlers run while the request waits, and the answer reflects them.

With a deadline (``WEBHOOK_RECEIVER_INLINE_DEADLINE``), the handlers run in a
thread of the process (:class:`~.runners.Runners`) while the request waits for
them. Done in time, the answer is theirs (200, 500), as without a deadline.
Still running at the deadline, the event joins the store's queue
(:meth:`~webhook_receiver.stores.EventStore.accept` on the event the request
holds) and the request answers 202 ``accepted``: the thread goes on, its lease
renewed by the heartbeat, and finishes the event as a background run would
(a failure is retried by the queue). Should the process die first, a takeover
worker of any process takes the event from the queue
(:meth:`~webhook_receiver.stores.EventStore.claim_due`) once its lease runs
out. The handlers are never interrupted.
"""

from __future__ import annotations

import atexit
import contextvars
import math
import threading
import time
import weakref
from functools import partial
from typing import Any, Callable, Sequence

from .. import instrumentation, signals
from ..errors import StoreUnavailable
from ..events import Event
from ..handlers import Handler, HandlerSource
from ..stores.base import Claim, ClaimState, EventStatus, EventStore
from ..untrusted import logger
from .base import NOT_STARTED, Dispatcher, Outcome, RetryPolicy
from .lease import HEARTBEAT
from .queue import loaded_by_flask_command
from .run import REQUEST_PATIENCE, HandlersRun, finish_now, finish_run, run_handlers, run_inline_claim, write_durably
from .runners import Carried, Runners, carried_variables, handlers_context, keep_app_context
from .thread import ThreadDispatcher

__all__ = ["AUTO", "DEFAULT_DEADLINE", "MAX_DEADLINE", "UPSTREAM_TIMEOUT", "InlineDispatcher"]


#: The default deadline in seconds, with a durable store: under upstream's timeout of about 10 s.
DEFAULT_DEADLINE = 8.0

#: About how long upstream waits for an answer, in seconds; a deadline at or past it warns (in the app's settings).
UPSTREAM_TIMEOUT = 10.0

#: The longest deadline taken, in seconds: a deadline is for answering before upstream's timeout of about 10 s,
#: and one past what a thread can wait for would fail every delivery after its handlers started.
MAX_DEADLINE = 3600.0

#: ``InlineDispatcher(deadline=AUTO)``: :data:`DEFAULT_DEADLINE` with a durable store, none with another.
AUTO = "auto"

#: The answer for each state of :func:`~webhook_receiver.dispatch.run.run_now`.
_OUTCOMES = {
    "duplicate": Outcome(200, "duplicate"),
    "busy": Outcome(409, "in_progress"),
    "processed": Outcome(200, "processed"),
    "failed": Outcome(500, "failed"),
}
#: The same, for a delivery of an event already stored (a claim of attempt 0, done or busy, or past 1):
#: it goes to the event's delivery log.
_KNOWN = {state: outcome.as_known() for state, outcome in _OUTCOMES.items()}
_ACCEPTED = Outcome(202, "accepted")
_KNOWN_ACCEPTED = _ACCEPTED.as_known()


class InlineDispatcher(Dispatcher):
    """Runs the handlers while the request waits: 200 when they all succeeded, 500 when one failed.

    One store write claims the event, one finishes it (the last handler's
    outcome and the status together); a handler before the last adds one.

    :param deadline: seconds after which a delivery whose handlers still run
        is answered 202 and its handlers go on in the background (see the
        module docs); ``None``: the answer always waits for the handlers.
        :data:`AUTO`: :data:`DEFAULT_DEADLINE` with a durable store, ``None``
        with another (the memory store), decided by :meth:`bind`.
    :param policy: the retry rules of an event answered 202 whose handlers fail.
    :param grace: seconds running handlers get to finish when the process stops.
    :param poll_interval: how often the takeover worker looks for events whose
        worker died; a quarter of the lease, at most 5 s, by default.
    :raises ValueError: if *deadline* is not ``None``, :data:`AUTO` or a
        positive number of seconds up to :data:`MAX_DEADLINE`.
    """

    name = "inline"

    def __init__(
        self,
        *,
        deadline: float | str | None = AUTO,
        policy: RetryPolicy | None = None,
        grace: float = 10.0,
        poll_interval: float | None = None,
    ) -> None:
        super().__init__()
        if deadline is not None and deadline != AUTO:
            if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
                raise ValueError(f"deadline must be a number of seconds, None or AUTO, not {type(deadline).__name__}")
            if not math.isfinite(deadline) or deadline <= 0:
                raise ValueError("deadline must be a positive, finite number of seconds, or None")
            if deadline > MAX_DEADLINE:
                raise ValueError(
                    f"deadline must be at most {MAX_DEADLINE:g} seconds (upstream stops waiting after about 10),"
                    " or None for no deadline"
                )
        self._deadline_setting = deadline
        #: The deadline in seconds, or ``None``; decided by :meth:`bind`.
        self.deadline: float | None = None
        self.policy = policy or RetryPolicy()
        self.grace = grace
        self._poll_interval = poll_interval
        self._runners = Runners("inline")
        self._stopping = threading.Event()
        self._takeover: _Takeover | None = None
        self._atexit = False

    def __repr__(self) -> str:
        return f"<InlineDispatcher deadline={self.deadline if self.app is not None else self._deadline_setting}>"

    def bind(self, app: Any, receiver: HandlerSource, store: EventStore) -> None:
        """Bind as :meth:`Dispatcher.bind` does, decide the deadline, and start the takeover worker.

        The takeover worker starts here unless a ``flask`` command other than
        ``run`` loads the app, or the app is ``TESTING`` (it then starts with
        the first delivery answered at the deadline, so that test apps start
        no threads of their own).

        :raises RuntimeError: if a deadline is asked for with a store that is
            not durable: its 202 would not outlive the process.
        """
        super().bind(app, receiver, store)
        setting = self._deadline_setting
        if setting == AUTO:
            self.deadline = DEFAULT_DEADLINE if store.durable else None
        elif setting is not None and not store.durable:
            raise RuntimeError(not_durable_message(store, "InlineDispatcher(deadline=...)"))
        else:
            self.deadline = None if setting is None else float(setting)
        if self.deadline is None:
            return
        poll = self._poll_interval if self._poll_interval is not None else min(5.0, store.lease_seconds / 4)
        self._takeover = _Takeover(threads=1, policy=self.policy, grace=self.grace, poll_interval=poll)
        self._takeover.bind(app, receiver, store)
        if not app.testing and not loaded_by_flask_command():
            self._takeover.start()

    # -- answering ----------------------------------------------------------------------

    def dispatch(self, event: Event, handlers: Sequence[Handler] | None = None) -> Outcome:
        app, receiver, store = self._bound()
        if self.deadline is None:
            claim = store.claim(event)
            state, _ = run_inline_claim(app, receiver, store, event, claim, handlers)
            return _OUTCOMES[state] if claim.attempt == 1 else _KNOWN[state]
        return self._dispatch_by(time.monotonic() + self.deadline, app, receiver, store, event, handlers)

    def dispatch_many(
        self, batch: Sequence[tuple[Event, Sequence[Handler]]], *, stopping: threading.Event | None = None
    ) -> list[Outcome | Exception]:
        """Run the handlers of a queue consumer's messages here, their store writes shared.

        One :meth:`~webhook_receiver.stores.EventStore.claim_many` claims the
        events, their handlers run one event after the other (each lease kept
        alive from the claim on), and one
        :meth:`~webhook_receiver.stores.EventStore.finish_many` records those
        that succeeded; a failed event is finished on its own, as
        :meth:`dispatch` does. No deadline applies: a queue has no timeout to
        answer by, and its message is acknowledged once the outcome is
        recorded. Once *stopping* is set no further event starts
        (:data:`~.base.NOT_STARTED`); the claims of those left run out with
        their lease, and a redelivery of one is busy until then.
        """
        app, receiver, store = self._bound()
        if not batch:
            return []
        claims = store.claim_many([event for event, _ in batch])  # StoreUnavailable: the caller retries them all
        results: list[Outcome | Exception] = [_OUTCOMES["busy"]] * len(batch)
        patience = _patience(store)
        claimed = [claim for claim in claims if claim.state is ClaimState.CLAIMED]
        watchers = instrumentation.run_watchers(app)  # asked once for the batch (before the heartbeat holds them)
        HEARTBEAT.add_many(store, claimed)  # kept alive from the claim to the batch's finish
        finishing: list[tuple[int, Event, Claim, HandlersRun]] = []
        unstarted: list[Claim] = []
        try:
            for index, ((event, handlers), claim) in enumerate(zip(batch, claims)):
                if claim.state is ClaimState.DONE:
                    results[index] = _KNOWN["duplicate"]
                    continue
                if claim.state is ClaimState.BUSY:
                    results[index] = _KNOWN["busy"]
                    continue
                if stopping is not None and stopping.is_set():
                    results[index] = NOT_STARTED
                    unstarted.append(claim)
                    continue
                try:
                    with app.app_context():
                        result = run_handlers(
                            app,
                            event,
                            handlers,
                            store,
                            claim,
                            receiver=receiver,
                            patience=patience,
                            kept=True,
                            watchers=watchers,
                        )
                        if result.lost or result.failed:
                            HEARTBEAT.discard(claim)  # its finish ends the lease: renewed, it would look lost
                            state, _ = finish_now(app, receiver, store, event, claim, result, patience=patience)
                            results[index] = (_OUTCOMES if claim.attempt == 1 else _KNOWN)[state]
                        elif result.finished:
                            HEARTBEAT.discard(claim)  # finished with its handler's transaction
                            signals.send_isolated(signals.event_handled, app, event=event, receiver=receiver)
                            results[index] = (_OUTCOMES if claim.attempt == 1 else _KNOWN)["processed"]
                        else:
                            finishing.append((index, event, claim, result))
                except Exception as exc:  # noqa: BLE001 - this event's message is not acknowledged
                    HEARTBEAT.discard(claim)  # its run stopped: the lease runs out, for a redelivery
                    results[index] = exc
            if finishing:
                self._finish_many(app, receiver, store, finishing, results, patience)
        finally:
            HEARTBEAT.discard_many(claimed)
            _give_back(store, unstarted)
        return results

    def _finish_many(
        self,
        app: Any,
        receiver: HandlerSource,
        store: EventStore,
        finishing: list[tuple[int, Event, Claim, HandlersRun]],
        results: list[Outcome | Exception],
        patience: float,
    ) -> None:
        """Record the events whose handlers all succeeded, in one write (tried again while the store refuses)."""
        first = finishing[0][1]
        tries = 0

        def finish() -> list[bool]:
            nonlocal tries
            tries += 1
            return store.finish_many([(claim, result.last) for _, _, claim, result in finishing])

        try:
            written = write_durably(
                finish, event_id=first.id, what=f"the outcomes of {len(finishing)} events", patience=patience
            )
        except StoreUnavailable as exc:
            for index, _, _, _ in finishing:
                results[index] = exc
            return
        if tries > 1 and not all(written):  # a try that failed part-way may have written some: they are done
            written = [taken or _processed(store, event.id) for (_, event, _, _), taken in zip(finishing, written)]
        for (index, event, claim, _), taken in zip(finishing, written):
            if taken:
                signals.send_isolated(signals.event_handled, app, event=event, receiver=receiver)
                results[index] = (_OUTCOMES if claim.attempt == 1 else _KNOWN)["processed"]
            else:
                claim.lost = True
                logger.warning(
                    "event %s: the lease was taken over by another worker before this run finished;"
                    " its outcome is not recorded",
                    event.id,
                )

    def _dispatch_by(
        self,
        deadline: float,
        app: Any,
        receiver: HandlerSource,
        store: EventStore,
        event: Event,
        handlers: Sequence[Handler] | None,
    ) -> Outcome:
        """Claim *event*, run its handlers in a runner thread, and answer by *deadline* (monotonic)."""
        if not self._atexit:
            self._atexit = True
            atexit.register(_close_at_exit, weakref.ref(self))
        claim = store.claim(event)
        if claim.state is ClaimState.DONE:
            return _KNOWN["duplicate"]
        if claim.state is ClaimState.BUSY:
            return _KNOWN["busy"]
        if handlers is None:
            handlers = receiver.handlers_for(event.trigger, app)
        handoff = _Handoff()
        job = partial(self._run, app, receiver, store, event, handlers, claim, handoff, carried_variables())
        wait = max(0.0, deadline - time.monotonic())
        self._runners.submit(job)  # the last thing before the wait: the runner takes the GIL as this thread blocks
        if handoff.wait(wait) or not handoff.leave():
            return self._answer(app, receiver, store, event, claim, handoff)
        try:
            store.accept(event)  # the event joins the queue: a takeover worker runs it if this process dies
        except BaseException:
            handoff.decide(_ABANDONED)
            logger.error(
                "event %s (%s): its handlers still run after the deadline and it cannot be queued;"
                " not acknowledged, upstream's retry finds it",
                event.id,
                event.trigger,
            )
            raise
        # The run is the queue's now: its failure is retried by this dispatcher's policy (finish_run), and a
        # failure past the policy's last attempt is final, as a queue run's is, not left to the queue again.
        claim.by_queue = True
        handoff.decide(_ACCEPTED_STATE)
        if self._takeover is not None:
            self._takeover.start()  # once per process (a TESTING app's starts here); at once when it runs
        logger.warning(
            "event %s (%s): handlers still running at the deadline of %g s; answered 202, they go on in the background",
            event.id,
            event.trigger,
            self.deadline,
        )
        signals.send_isolated(signals.event_accepted, app, event=event, deadline=self.deadline, receiver=receiver)
        return _ACCEPTED if claim.attempt == 1 else _KNOWN_ACCEPTED

    def _answer(
        self, app: Any, receiver: HandlerSource, store: EventStore, event: Event, claim: Claim, handoff: _Handoff
    ) -> Outcome:
        """The handlers ended before the deadline: finish the claim here and answer as without one."""
        if handoff.error is not None:
            raise handoff.error
        assert handoff.result is not None
        state, _ = finish_now(app, receiver, store, event, claim, handoff.result, patience=_patience(store))
        return _OUTCOMES[state] if claim.attempt == 1 else _KNOWN[state]

    def _run(
        self,
        app: Any,
        receiver: HandlerSource,
        store: EventStore,
        event: Event,
        handlers: Sequence[Handler],
        claim: Claim,
        handoff: _Handoff,
        carried: Carried,
    ) -> None:
        """In a runner thread: run the handlers; finish the event if the request answered 202 meanwhile.

        The run happens in a copy of the runner thread's own context
        (:func:`~.runners.keep_app_context` readies it), so that nothing it
        sets outlives it: a context variable, a request context a handler
        left pushed. It sees the request's context variables (*carried*,
        less Flask's) and an app context of its own
        (:func:`~.runners.handlers_context`), which ends before the result is
        reported: the request, woken by the report, then finds this thread
        about to wait for its next job rather than holding the GIL through a
        teardown.
        """

        def run() -> None:  # in the copy
            for variable, value in carried:  # the request's (carried_variables), in this copy only
                variable.set(value)
            patience = _patience(store)
            stopping = self._stopping
            try:
                end = handlers_context(app, kept)
                try:
                    result = run_handlers(
                        app, event, handlers, store, claim, receiver=receiver, stopping=stopping, patience=patience
                    )
                except BaseException as exc:
                    end(exc)
                    raise
                _end_quietly(end, event)
                if handoff.ran_with(result, None):
                    return  # the request finishes the event and answers
                with app.app_context():
                    if handoff.wait_decision() == _ACCEPTED_STATE:
                        _, delay = finish_run(
                            app, receiver, store, event, claim, result, self.policy, stopping=stopping
                        )
                        if delay is not None and self._takeover is not None:
                            self._takeover.due_at(time.time() + delay)
                    else:  # no 202 was given: finish as the request would have, for upstream's retry
                        finish_now(app, receiver, store, event, claim, result, patience=patience)
            except BaseException as exc:
                if not handoff.reported and handoff.ran_with(None, exc):
                    return  # the request raises it
                logger.error(
                    "event %s (%s): its run in the background stopped (%s); it runs again once its lease runs out",
                    event.id,
                    event.trigger,
                    type(exc).__name__,
                )

        kept = None
        try:
            kept = keep_app_context(app)
        except Exception:  # noqa: BLE001 - the run then pushes an app context of its own
            logger.exception("event %s: the runner thread's app context could not be kept", event.id)
        contextvars.copy_context().run(run)

    # -- stopping -----------------------------------------------------------------------

    def close(self, grace: float | None = None) -> None:
        """Give running handlers *grace* seconds (:attr:`grace`) to finish; stop the takeover worker.

        A run answered 202 and not finished by then stays in the store, due
        once its lease runs out, for the next worker.
        """
        grace = self.grace if grace is None else grace
        until = time.monotonic() + grace
        self._stopping.set()
        takeover = self._takeover
        unfinished = self._runners.join(grace)
        if unfinished:
            logger.warning(
                "stopping with %d inline handler run(s) unfinished; those answered 202 run again once their"
                " lease runs out",
                unfinished,
            )
        if takeover is not None:
            takeover.close(max(0.0, until - time.monotonic()))
        self._stopping = threading.Event()


def not_durable_message(store: EventStore, where: str) -> str:
    """Why a deadline is refused with *store*, naming the setting (*where*)."""
    return (
        f"{where} asks for a 202 answer when handlers run late, and the {store.name} store keeps events in"
        " this process only: a handler cut short by a restart would never run again. Use a durable store"
        " (the default SQLite file, Redis, a database), or set the deadline to None to answer when the"
        " handlers end"
    )


def _give_back(store: EventStore, claims: Sequence[Claim]) -> None:
    """End the claims of a batch's events that a stop left unstarted: due now, for the next consumer.

    Their messages go back to the queue at once; held until their lease ran
    out, each redelivery would be answered busy (and given back again) for
    the whole lease. A store that cannot take it: the lease runs out as before.
    """
    now = time.time()
    for claim in claims:
        try:
            store.finish(claim, ok=False, retry_at=now)
        except Exception as exc:  # noqa: BLE001 - its lease runs out: it is taken again then
            logger.warning("event %s: not started, held until its lease runs out (%s)", claim.event_id, exc)


def _processed(store: EventStore, event_id: str) -> bool:
    """Whether *event_id* is stored processed (a look after a refused write; a store that cannot answer: no)."""
    try:
        stored = store.get(event_id)
    except StoreUnavailable:
        return False
    return stored is not None and stored.status is EventStatus.PROCESSED


def _patience(store: EventStore) -> float:
    return min(REQUEST_PATIENCE, store.lease_seconds)


# The states of a hand-off, once the request has stopped waiting.
_LEAVING = "leaving"  # the deadline passed: the request is queueing the event
_ACCEPTED_STATE = "accepted"  # queued: the request answered 202, the runner finishes the event
_ABANDONED = "abandoned"  # it could not be queued: no 2xx; the runner finishes as inline, for upstream's retry


class _Handoff:
    """Between a request and the runner thread of its handlers: who finishes the event.

    The runner reports its result (:meth:`ran_with`); the request, at the
    deadline, either finds it there or leaves (:meth:`leave`), under one lock,
    so that exactly one of the two finishes the claim. The waits are on plain
    locks, held until the other side releases them (no ``threading.Event``,
    whose condition costs a lock and a list per wait): the request's wait is
    one blocking call, woken by the report.
    """

    __slots__ = ("_lock", "_ran", "_decided", "reported", "state", "result", "error")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ran = threading.Lock()
        self._ran.acquire()  # released by the report
        self._decided: Any = None  # a held lock, made by leave(), released by decide()
        #: Whether the runner reported (set under the lock, by the runner).
        self.reported = False
        self.state: str | None = None
        self.result: HandlersRun | None = None
        self.error: BaseException | None = None

    def wait(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for the runner's report; whether it came."""
        if self._ran.acquire(True, timeout):
            self._ran.release()  # a later wait passes at once
            return True
        return False

    def ran_with(self, result: HandlersRun | None, error: BaseException | None) -> bool:
        """Report the handlers' end; whether the request still waits (and so finishes the event)."""
        with self._lock:
            self.result, self.error = result, error
            self.reported = True
            waiting = self.state is None
        self._ran.release()
        return waiting

    def leave(self) -> bool:
        """The request stops waiting, unless the result came meanwhile (``False``: it finishes the event)."""
        with self._lock:
            if self.reported:
                return False
            decided = threading.Lock()
            decided.acquire()
            self._decided = decided
            self.state = _LEAVING
            return True

    def decide(self, state: str) -> None:
        """After :meth:`leave`: the event was queued (:data:`_ACCEPTED_STATE`) or not (:data:`_ABANDONED`)."""
        self.state = state
        self._decided.release()

    def wait_decision(self) -> str | None:
        """The request's decision, once it is made (after :meth:`leave`, which :meth:`ran_with` saw)."""
        self._decided.acquire()
        self._decided.release()
        return self.state


def _end_quietly(end: Callable[[BaseException | None], None], event: Event) -> None:
    """End the handlers' app context; a teardown that fails is logged, not taken for the handlers' failure."""
    try:
        end(None)
    except Exception:  # noqa: BLE001 - the handlers ran: their outcome stands
        logger.exception("event %s (%s): a teardown of the handlers' app context failed", event.id, event.trigger)


class _Takeover(ThreadDispatcher):
    """The queue worker of an inline dispatcher: runs events answered 202 whose worker died, and their retries.

    It measures no backlog (no delivery waits on it), and says that the
    store cannot be reached once a minute rather than at every try: it runs
    in every process of an inline app, most of which never need it.
    """

    name = "inline-takeover"

    #: Seconds between two warnings that the store cannot be reached.
    QUIET_SECONDS = 60.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._said_at = -math.inf

    def bind(self, app: Any, receiver: Any, store: Any) -> None:
        Dispatcher.bind(self, app, receiver, store)  # started by the inline dispatcher, not here

    def _monitor(self) -> None:
        """No backlog to measure."""

    def _cannot_take(self, exc: StoreUnavailable, pause: float) -> None:
        now = time.monotonic()
        if now - self._said_at >= self.QUIET_SECONDS:
            self._said_at = now
            logger.warning(
                "the takeover worker cannot look for events whose worker died: %s; it keeps trying"
                " (said once a minute)",
                exc,
            )


def _close_at_exit(ref: weakref.ref[InlineDispatcher]) -> None:
    dispatcher = ref()
    if dispatcher is not None:
        dispatcher.close()
