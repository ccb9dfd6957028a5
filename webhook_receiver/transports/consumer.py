"""The loop every queue transport shares: take a message, make its event durable, and only then acknowledge it.

A transport (:mod:`.stomp`, :mod:`.sqs`) knows how to connect, receive,
acknowledge and give a message back; :class:`Consumer` decides what to do
with each message, the same for every transport:

* the body is parsed with :meth:`Event.from_cloudevent`; a message that is
  not an Elastic Path CloudEvent (not JSON, no ``id`` or ``type``, larger than
  the receiver's limit) is *poison*: logged, escaped and without its body, and
  dead-lettered (the transport says how), and the loop goes on;
* the event goes the HTTP endpoint's way from there
  (:func:`~webhook_receiver.intake.hand_over`): the message is acknowledged
  once the dispatcher says the event is durable (background dispatch:
  ``accepted``, stored pending) or done (inline dispatch: ``processed``, its
  outcome recorded), or was already (``duplicate``), or no handler takes it
  (``ignored``);
* a handler that failed, an event another worker holds (``in_progress``), a
  store or task queue that cannot answer, or anything unexpected leave the
  message unacknowledged: the transport gives it back to the queue after a
  backoff, and a crash gives it back by itself (the broker redelivers what a
  dead connection did not acknowledge; SQS, once the visibility timeout
  runs out);
* :meth:`Consumer.stop` (SIGTERM) stops taking messages, gives back those
  not started, and lets running handlers finish for ``grace`` seconds;
* a broker that goes away is reconnected to, with backoff, saying so.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from .. import instrumentation
from ..dispatch.base import NOT_STARTED, Dispatcher, Outcome
from ..errors import BacklogFull, BrokerUnavailable, InvalidEvent, StoreUnavailable, TransportUnavailable
from ..events import Event
from ..handlers import HandlerSource
from ..intake import IGNORED, hand_over_many, log_redelivery
from ..untrusted import logger

# check_counts and check_seconds are the transports' own (stomp.py, registry.py), not the package's.
__all__ = ["Consumer", "ConsumerStats", "Message", "Transport", "TransportUnavailable", "mask_url"]

#: What an acknowledged message's dispatch outcome may be.
_DONE = frozenset({"accepted", "processed", "duplicate", "ignored"})

#: Handlers taking less than this many seconds an event (on average) run in batches; slower, on threads.
BATCH_SECONDS = 0.005

_DUPLICATE = Outcome(200, "duplicate")
_BUSY = Outcome(409, "in_progress")


def check_counts(**counts: Any) -> None:
    """Refuse a count of a consumer's (*name=value*; ``None``: its default) that is not a whole number of 1 or more.

    :raises ValueError: naming the first that is not.
    """
    for name, value in counts.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")


def check_seconds(**seconds: Any) -> None:
    """Refuse a number of seconds of a consumer's that is not finite and 0 or more.

    :raises ValueError: naming the first that is not.
    """
    for name, value in seconds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise ValueError(f"{name} must be a finite number of seconds, 0 or more, not {value!r}")


def _info_enabled() -> bool:
    return logger.isEnabledFor(logging.INFO)


#: How long a batch waits for the messages still arriving, at most (transports whose receive can wait briefly).
LINGER_SECONDS = 0.002

#: A connection lost after holding this many seconds is made again at once; one lost sooner, after a backoff.
STABLE_SECONDS = 30.0

#: The longest pause, in seconds, between two questions to a store that does not answer (no message taken meanwhile).
STORE_PROBE_MAX = 30.0

#: The handler name of the watermark a consumer writes to learn that its store takes writes again after an outage.
PROBE_HANDLER = "webhook_receiver.consumer.store_probe"

#: What replaces a password in a URL shown anywhere.
MASK = "***"


def mask_url(url: str) -> str:
    """*url* with the password of its user info replaced by ``***`` (and nothing else changed)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unreadable URL>"
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


@dataclass(eq=False)
class Message:
    """One message as a transport received it.

    :param body: the body's bytes.
    :param message_id: the transport's id of the message, for logs.
    :param attempt: how many times the queue delivered it, when it says (else 1).
    :param handle: what the transport needs to acknowledge it.
    """

    body: bytes
    message_id: str
    attempt: int = 1
    handle: Any = field(default=None, repr=False)


class Transport(ABC):
    """What a queue offers the consumer. Every method but :meth:`connect` and :meth:`receive` is best effort."""

    #: The transport's name, as :attr:`Event.transport`: ``"stomp"``, ``"sqs"``.
    name: str = ""
    #: How often the consumer calls :meth:`keep_alive` for messages whose
    #: handlers still run, or ``None`` when the transport needs no keep-alive.
    keep_alive_interval: float | None = None
    #: Whether :meth:`receive` waits no longer than its *timeout* (a local buffer, as STOMP's), so that a
    #: batch may wait a millisecond or two for messages still arriving; SQS's long poll does not.
    lingers: bool = False

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the transport consumes from, credentials masked, for log lines."""

    @abstractmethod
    def connect(self) -> None:
        """Connect and start consuming.

        :raises TransportUnavailable: if it cannot.
        """

    @abstractmethod
    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to *max_messages* messages, waiting at most about *timeout* seconds for the first.

        :raises TransportUnavailable: if the connection is lost.
        """

    @abstractmethod
    def ack(self, message: Message) -> None:
        """Acknowledge *message*: the queue forgets it."""

    def ack_many(self, messages: list[Message]) -> None:
        """Acknowledge each of *messages* (a consumer's batch); one :meth:`ack` each by default.

        A transport that can send them together (one socket write, one batch
        request) overrides it. Best effort, as :meth:`ack`: a message whose
        acknowledgement is lost comes again, and is then a duplicate.
        """
        for message in messages:
            self.ack(message)

    @abstractmethod
    def retry(self, message: Message, delay: float) -> None:
        """Give *message* back, to be delivered again in about *delay* seconds."""

    @abstractmethod
    def dead_letter(self, message: Message, reason: str) -> str:
        """Send *message* to the dead-letter queue, or leave it for the queue's own dead-lettering.

        :returns: what became of it, for the log line.
        """

    def release(self, message: Message) -> None:
        """Give back a message taken but not started (shutdown): at once, for another consumer."""
        self.retry(message, 0.0)

    def stop_receiving(self) -> None:
        """Ask the queue for no further message (the consumer stops); those taken can still be acknowledged."""

    def buffered(self) -> list[Message]:
        """The messages received from the queue and not yet taken by :meth:`receive` (none by default)."""
        return []

    def keep_alive(self, messages: list[Message]) -> list[tuple[Message, str]]:
        """Tell the queue that *messages* are still being handled (see :attr:`keep_alive_interval`).

        :returns: the messages the queue did not keep, each with its reason (a
            message acknowledged meanwhile is among them, and is not reported).
        """
        return []

    @abstractmethod
    def close(self) -> None:
        """Disconnect; what is not acknowledged is the queue's again."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


class _Slots:
    """How many more messages the consumer may hold (its prefetch), taken all at once and given back in bulk.

    A semaphore took them one by one: with messages arriving one at a time,
    each turn of the loop acquired every free slot and released all but one,
    some thirty lock operations a message.
    """

    __slots__ = ("_free", "_changed")

    def __init__(self, count: int) -> None:
        self._free = count
        self._changed = threading.Condition(threading.Lock())

    def take_all(self, timeout: float) -> int:
        """Every free slot, waiting up to *timeout* seconds for one; 0 if none came."""
        with self._changed:
            if not self._free and not self._changed.wait_for(lambda: self._free > 0, timeout):
                return 0
            free, self._free = self._free, 0
            return free

    def give(self, count: int) -> None:
        """Give *count* slots back."""
        if count > 0:
            with self._changed:
                self._free += count
                self._changed.notify()


@dataclass
class ConsumerStats:
    """What a consumer did since it started, by what became of each message."""

    #: Acknowledged: durable or done (each outcome counted in :attr:`outcomes`).
    acked: int = 0
    #: Given back to the queue (a failed handler, a store outage, ...).
    retried: int = 0
    #: Dead-lettered as poison.
    poison: int = 0
    #: Acknowledged messages by dispatch outcome (``processed``, ``duplicate``, ...).
    outcomes: dict[str, int] = field(default_factory=dict)


class Consumer:
    """Takes events from a queue into *receiver*'s handlers on *app*, with the HTTP endpoint's guarantees.

    Build one with :meth:`WebhookReceiver.consumer <webhook_receiver.WebhookReceiver.consumer>`;
    :meth:`run` blocks until :meth:`stop` (or SIGTERM / SIGINT, with
    ``handle_signals``).

    :param receiver: whose handlers run.
    :param app: the app they run in (an app context is pushed for each message).
    :param dispatcher: the receiver's dispatcher on *app*.
    :param transport: where messages come from.
    :param max_message_bytes: a larger message is poison.
    :param concurrency: messages handled at once (worker threads).
    :param prefetch: messages taken from the queue and not yet finished, at
        most (those beyond *concurrency* wait for a worker, kept from other
        consumers meanwhile); four times *concurrency* by default.
    :param grace: seconds running handlers get to finish at :meth:`stop`.
    :param retry_backoff: seconds before a message whose event could not be
        made durable or done is delivered again, doubled per failure of the same
        message up to *max_backoff*.
    :raises ValueError: if a count is not a whole number of at least 1, or a
        number of seconds not finite and 0 or more (the backoffs: more than 0).
    """

    def __init__(
        self,
        receiver: HandlerSource,
        app: Any,
        dispatcher: Dispatcher,
        transport: Transport,
        *,
        max_message_bytes: int = 1024 * 1024,
        concurrency: int = 4,
        prefetch: int | None = None,
        grace: float = 10.0,
        retry_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        check_counts(concurrency=concurrency, prefetch=prefetch, max_message_bytes=max_message_bytes)
        check_seconds(grace=grace, retry_backoff=retry_backoff, max_backoff=max_backoff)
        if retry_backoff <= 0 or max_backoff <= 0:
            raise ValueError("retry_backoff and max_backoff must be more than 0 seconds")
        self.receiver = receiver
        self.app = app
        self.dispatcher = dispatcher
        self.transport = transport
        self.max_message_bytes = max_message_bytes
        self.concurrency = concurrency
        self.prefetch = max(prefetch or 4 * concurrency, concurrency)
        self.grace = grace
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        #: What this consumer did since it started.
        self.stats = ConsumerStats()
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[int, Message] = {}
        self._queued: dict[Future[None], Message] = {}  # handed to the pool, maybe not started
        self._failures: dict[str, int] = {}  # message or event id -> failures seen here
        self._slots = _Slots(self.prefetch)
        self._pause_until = 0.0
        self._outage = 0.0
        self._store_down = False  # the store failed: it is asked before a message is taken again
        self._probing = False  # it answered again: one message is taken until one is done
        #: Whether messages run in batches (quick handlers) or one per thread (see :meth:`_timed`).
        self._batching = True
        self._per_event = 0.0
        #: The most messages of one batch: half the prefetch, so that the broker sends the other half meanwhile.
        self._batch_size = max(1, self.prefetch // 2)

    def __repr__(self) -> str:
        return f"<Consumer {self.transport.description} concurrency={self.concurrency}>"

    # -- running ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking messages; :meth:`run` returns once running handlers finished or the grace ran out."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping.is_set()

    def run(self, *, handle_signals: bool = False, until: Callable[[ConsumerStats], bool] | None = None) -> None:
        """Consume until :meth:`stop`.

        :param handle_signals: SIGTERM and SIGINT call :meth:`stop` (main thread only);
            should handlers still run a second past the grace period after
            it, the process exits (status 1) and the queue delivers their
            messages again, as after a crash: a handler of a batch runs in
            this thread, and nothing else would end the wait for it. With
            none running (the loop waits for a long poll), it exits with
            status 0.
        :param until: stop once this returns true for :attr:`stats` (tests, benchmarks).
        """
        overdue: list[threading.Timer] = []
        if handle_signals:

            def stop_on_signal(*_: Any) -> None:
                self.stop()
                if not overdue:
                    timer = threading.Timer(self.grace + 1.0, self._exit_overdue)
                    timer.daemon = True
                    overdue.append(timer)
                    timer.start()

            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, stop_on_signal)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="webhook-receiver-consumer")
        keeper = threading.Thread(target=self._keep_alive_loop, name="webhook-receiver-keep-alive", daemon=True)
        keeper.start()
        try:
            self._loop(pool, until)
        finally:
            self._stopping.set()
            self._drain(pool)
            self._release_buffered()
            self._closed.set()
            self.transport.close()
            logger.info("consumer of %s stopped: %s", self.transport.description, self._summary())
            with self._lock:
                finished = not self._in_flight
            if finished:
                for timer in overdue:
                    timer.cancel()

    def _exit_overdue(self) -> None:
        """A second past the grace period after SIGTERM the loop has not ended: exit, as :meth:`run` says.

        With handlers still running, status 1 and their messages come again;
        with none (the loop waits for a long poll to return), status 0.
        """
        with self._lock:
            running = len(self._in_flight)
        if not running:  # the loop still waits for a poll (an SQS long poll of up to 20 s): no work is cut
            logger.info(
                "consumer of %s stopped while a poll was still open: %s", self.transport.description, self._summary()
            )
            logging.shutdown()
            os._exit(0)
        logger.warning(
            "handlers of %d message(s) still run %.1f s after the signal to stop; exiting: the queue delivers"
            " their messages again",
            running,
            self.grace + 1.0,
        )
        logging.shutdown()
        os._exit(1)

    def _loop(self, pool: ThreadPoolExecutor, until: Callable[[ConsumerStats], bool] | None) -> None:
        connected = False
        pause = 0.5
        connected_at = 0.0
        while not self._stopping.is_set():
            if until is not None and until(self.stats):
                return
            if not connected:
                try:
                    logger.info("connecting to %s", self.transport.description)
                    self.transport.connect()
                except TransportUnavailable as exc:
                    logger.warning(
                        "cannot consume from %s: %s; trying again in %.1f s", self.transport.description, exc, pause
                    )
                    self._stopping.wait(pause)
                    pause = min(pause * 2, 30.0)
                    continue
                connected, connected_at = True, time.monotonic()
                logger.info("consuming from %s (%d at a time)", self.transport.description, self.concurrency)
            wait = self._pause_until - time.monotonic()
            if wait > 0:
                self._stopping.wait(wait)
                continue
            if self._store_down and not self._store_answers():
                continue  # no message is taken (on SQS, each receive counts toward its dead-lettering)
            if self._probing and self._holds_any():  # after an outage, one message at a time until one is done
                self._stopping.wait(0.05)
                continue
            free = self._slots.take_all(timeout=0.5)
            if not free:
                continue
            if self._probing and free > 1:
                self._give_slots(free - 1)
                free = 1
            if self._batching and free > self._batch_size:
                self._give_slots(free - self._batch_size)
                free = self._batch_size
            try:
                messages = self.transport.receive(free, 0.5)
                if self._batching and self.transport.lingers and 0 < len(messages) < free:
                    messages += self._more(free - len(messages))
            except TransportUnavailable as exc:
                self._give_slots(free)
                connected = False
                if time.monotonic() - connected_at >= STABLE_SECONDS:  # it had held: reconnect at once
                    pause = 0.5
                    wait = 0.0
                else:  # lost soon after it was made (a destination the broker refuses, ...): back off
                    wait, pause = pause, min(pause * 2, 30.0)
                logger.warning(
                    "lost the connection to %s: %s; reconnecting%s (what was not acknowledged is delivered again)",
                    self.transport.description,
                    exc,
                    f" in {wait:.1f} s" if wait else "",
                )
                self.transport.close()
                if wait:
                    self._stopping.wait(wait)
                continue
            self._give_slots(free - len(messages))
            if not messages:
                continue
            if self._stopping.is_set():
                self._give_slots(len(messages))
                for message in messages:
                    self.transport.release(message)
                continue
            with self._lock:
                for message in messages:
                    self._in_flight[id(message)] = message
            if self._batching:  # here: a thread hand-off would cost more than quick handlers take
                self._handle_and_free(messages)
            else:
                for message in messages:
                    future = pool.submit(self._handle_and_free, [message])
                    with self._lock:
                        self._queued[future] = message
                    future.add_done_callback(self._unqueue)

    def _more(self, wanted: int) -> list[Message]:
        """Up to *wanted* more messages for a batch, as long as they keep coming (:data:`LINGER_SECONDS` at most).

        A broker sends the messages a batch's acknowledgements made room
        for one after the other: without this, a batch would often start
        with the first of them alone.
        """
        more: list[Message] = []
        until = time.monotonic() + LINGER_SECONDS
        while len(more) < wanted and time.monotonic() < until:
            got = self.transport.receive(wanted - len(more), LINGER_SECONDS / 4)
            if not got:
                break
            more += got
        return more

    def _release_buffered(self) -> None:
        """Give back at once what the transport received and the loop did not take: for another consumer.

        The subscription was ended first (:meth:`_drain`), so that the broker
        does not hand what is given back to this consumer again.
        """
        try:
            for message in self.transport.buffered():
                self.transport.release(message)
        except Exception:  # noqa: BLE001 - unacknowledged either way: the queue delivers them again
            pass

    def _give_slots(self, count: int) -> None:
        self._slots.give(count)

    def _unqueue(self, future: Future[None]) -> None:
        with self._lock:
            self._queued.pop(future, None)

    def _drain(self, pool: ThreadPoolExecutor) -> None:
        """Give back at once the messages the pool has not started; let running handlers finish within the grace."""
        deadline = time.monotonic() + self.grace
        try:  # first, so that the broker does not hand what is given back to this consumer again
            self.transport.stop_receiving()
        except Exception:  # noqa: BLE001 - what it sends meanwhile is unacknowledged: delivered again
            pass
        with self._lock:
            queued = list(self._queued.items())
        for future, message in queued:
            if future.cancel():  # not started: another consumer may have it now rather than after the grace
                try:
                    self.transport.release(message)
                except Exception:  # noqa: BLE001 - unacknowledged either way: the queue delivers it again
                    pass
                with self._lock:
                    self._in_flight.pop(id(message), None)
                self._slots.give(1)
        pool.shutdown(wait=False, cancel_futures=False)
        while time.monotonic() < deadline:
            with self._lock:
                if not self._in_flight:
                    return
            time.sleep(0.02)
        with self._lock:
            running = len(self._in_flight)
        if running:
            logger.warning(
                "stopping with %d message(s) still being handled after %.1f s; the queue delivers them again",
                running,
                self.grace,
            )

    def _keep_alive_loop(self) -> None:
        """Every :attr:`Transport.keep_alive_interval`, tell the queue which messages are still being handled."""
        while not self._closed.wait(self.transport.keep_alive_interval or 0.5):
            if self.transport.keep_alive_interval is None:
                continue
            with self._lock:
                messages = list(self._in_flight.values())
            if messages:
                try:
                    refused = list(self.transport.keep_alive(messages) or ())  # None: a transport of the older API
                except Exception as exc:  # noqa: BLE001 - the next beat tries again
                    logger.warning(
                        "cannot keep %d message(s) from other consumers: %s", len(messages), type(exc).__name__
                    )
                    continue
                with self._lock:  # those done meanwhile were acknowledged or given back: nothing to say of them
                    lost = [(m, why) for m, why in refused if id(m) in self._in_flight]
                if lost:
                    logger.warning(
                        "the queue did not keep %d message(s) still being handled from other consumers (%s):"
                        " another consumer may take them; their events' leases keep the handlers from running twice",
                        len(lost),
                        ", ".join(sorted({why for _, why in lost})),
                    )

    # -- one message -----------------------------------------------------------------------

    def _handle_and_free(self, messages: list[Message]) -> None:
        try:
            if self._stopping.is_set():  # taken, not started: another consumer may have them at once
                for message in messages:
                    try:
                        self.transport.release(message)
                    except Exception:  # noqa: BLE001 - unacknowledged either way: the queue delivers it again
                        pass
            else:
                self.handle_many(messages)
        finally:
            with self._lock:
                for message in messages:
                    self._in_flight.pop(id(message), None)
            self._slots.give(len(messages))

    def handle(self, message: Message) -> str:
        """Decide what becomes of one message, and tell the transport.

        :returns: ``"acked"``, ``"retried"`` or ``"poison"``.
        """
        return self.handle_many([message])[0]

    def handle_many(self, messages: list[Message]) -> list[str]:
        """Decide what becomes of each of *messages*, taken together, and tell the transport.

        Their events are dispatched in one call
        (:meth:`~webhook_receiver.dispatch.base.Dispatcher.dispatch_many`:
        inline dispatch claims them in one store write and records their
        outcomes in another), and those done are acknowledged together
        (:meth:`Transport.ack_many`), only once their outcomes are recorded.
        Two messages of one event in the batch: the second follows the
        first (acknowledged as a duplicate once the first is done, else given
        back).

        :returns: for each, ``"acked"``, ``"retried"`` or ``"poison"``.
        """
        started = time.perf_counter()
        results = [""] * len(messages)
        events: list[Event] = []
        owners: list[int] = []  # the message of each event
        copies: list[tuple[int, int, Event]] = []  # (message, the event it repeats, its own copy)
        first: dict[str, int] = {}
        transport = self.transport.name
        for position, message in enumerate(messages):
            if len(message.body) > self.max_message_bytes:
                reason = f"it is larger than the limit of {self.max_message_bytes} bytes"
                results[position] = self._poison(message, reason, "too_large", started)
                continue
            try:
                event = Event.from_cloudevent(message.body, transport=transport, attempt=message.attempt)
            except InvalidEvent as exc:
                results[position] = self._poison(message, exc.reason, "bad_request", started)
                continue
            seen = first.get(event.id)
            if seen is not None:
                copies.append((position, seen, event))
                continue
            first[event.id] = len(events)
            events.append(event)
            owners.append(position)
        outcomes: list[Outcome | Exception] = []
        if events:
            with self.app.app_context():
                outcomes = hand_over_many(events, self.receiver, self.app, self.dispatcher, stopping=self._stopping)
            self._timed(time.perf_counter() - started, len(events))  # the handlers' pace, not the queue's
        done: list[Message] = []
        statuses: list[str] = []
        for event, position, outcome in zip(events, owners, outcomes):
            results[position] = self._decide(messages[position], event, outcome, done, statuses, started)
        for position, seen, copy in copies:
            outcome = outcomes[seen]
            if isinstance(outcome, Outcome) and outcome.status in _DONE:
                outcome = _DUPLICATE
            elif not isinstance(outcome, Exception):
                outcome = _BUSY
            if isinstance(outcome, Outcome):  # a redelivery of an event this batch holds: its delivery log
                log_redelivery(self.dispatcher, copy, outcome.as_known())
            results[position] = self._decide(messages[position], events[seen], outcome, done, statuses, started)
        if done:
            try:
                self.transport.ack_many(done)
            except Exception as exc:  # noqa: BLE001 - the queue delivers them again: then duplicates
                logger.warning(
                    "%d acknowledgement(s) were not taken (%s); those messages come again as duplicates",
                    len(done),
                    exc,
                )
            with self._lock:
                self.stats.acked += len(done)
                for status in statuses:
                    self.stats.outcomes[status] = self.stats.outcomes.get(status, 0) + 1
        return results

    def _decide(
        self,
        message: Message,
        event: Event,
        outcome: Outcome | Exception,
        done: list[Message],
        statuses: list[str],
        started: float,
    ) -> str:
        """Acknowledge *message* (added to *done*) or give it back, by its event's *outcome*."""
        key = event.id
        if isinstance(outcome, Exception):
            if isinstance(outcome, (StoreUnavailable, BrokerUnavailable, BacklogFull)):
                self._outage_seen(store=isinstance(outcome, StoreUnavailable))
                self._answered("unavailable", 503, event, started)
                return self._retry(message, key, f"not acknowledged: {outcome}", event)
            logger.error(
                "event %s (%s): unexpected error; not acknowledged",
                event.id,
                event.trigger,
                exc_info=(type(outcome), outcome, outcome.__traceback__),
            )
            self._answered("error", 500, event, started)
            return self._retry(message, key, f"not acknowledged: {type(outcome).__name__}", event)
        if outcome is NOT_STARTED:  # the consumer stops: given back at once, for another consumer
            try:
                self.transport.release(message)
            except Exception:  # noqa: BLE001 - unacknowledged either way: the queue delivers it again
                pass
            return "retried"
        if outcome is not IGNORED:  # the store took a write (an ignored event touches none): the outage is over
            self._outage = 0.0
            self._probing = False
        self._answered(outcome.status, outcome.code, event, started)
        if outcome.status not in _DONE:
            reason = "another worker is handling it" if outcome.status == "in_progress" else "a handler failed"
            return self._retry(message, key, f"{reason}; not acknowledged", event)
        done.append(message)
        statuses.append(outcome.status)
        if self._failures:
            with self._lock:
                self._failures.pop(key, None)
        if _info_enabled():
            logger.info(
                "message event=%s trigger=%s transport=%s status=%s",
                event.id,
                event.trigger,
                event.transport,
                outcome.status,
            )
        return "acked"

    def _answered(self, status: str, code: int, event: Event | None, started: float) -> None:
        """Count the message as the HTTP endpoint counts a delivery, with the transport's name."""
        instrumentation.answered(
            self.app, self.receiver.name, status, code, event, None, started, transport=self.transport.name
        )

    def _timed(self, seconds: float, count: int) -> None:
        """Batches while the handlers are quick (:data:`BATCH_SECONDS` an event, on average), threads once slower."""
        per_event = self._per_event = 0.8 * self._per_event + 0.2 * (seconds / count)
        batching = per_event < BATCH_SECONDS or self.concurrency == 1
        if batching != self._batching:
            self._batching = batching
            logger.info(
                "consumer of %s: handlers take %.1f ms an event; %s",
                self.transport.description,
                per_event * 1000.0,
                "messages now run in batches" if batching else f"messages now run on {self.concurrency} threads",
            )

    def _outage_seen(self, *, store: bool = False) -> None:
        """The store or the task queue cannot answer: take no new message for a while (backoff to 5 s).

        With *store*, the loop then writes to the store itself before it takes
        a message again (:meth:`_store_answers`), backing off to
        :data:`STORE_PROBE_MAX` seconds: a message taken while the store is
        down only comes back again, and on SQS each receive counts toward its
        redrive policy's ``maxReceiveCount``, so a long outage would
        dead-letter every message of the queue. Once the store takes that
        write, one message is taken until one is done; should it fail again,
        the pause goes on growing.
        """
        with self._lock:
            if store and not self._store_down:
                self._store_down = True
                logger.warning(
                    "consumer of %s: the store does not answer; no message is taken until it does",
                    self.transport.description,
                )
            self._outage = min(max(self._outage * 2, 0.1), STORE_PROBE_MAX if self._store_down else 5.0)
            self._pause_until = time.monotonic() + self._outage

    def _holds_any(self) -> bool:
        with self._lock:
            return bool(self._in_flight)

    def _store_answers(self) -> bool:
        """While the store is down: whether it takes a write again, else a longer pause.

        The write is a watermark of a handler name of the consumer's own
        (:data:`PROBE_HANDLER`, one row a receiver, updated in place): a read
        would pass where writes still fail (a SQLite file another process
        holds locked, a Redis at its memory limit, a database read-only).
        """
        store = self.dispatcher.store
        try:
            if store is not None:
                with self.app.app_context():
                    store.raise_watermark(PROBE_HANDLER, "consumer", "store-probe", time.time())
        except Exception as exc:  # noqa: BLE001 - any failure: still down
            self._outage_seen(store=True)
            logger.info(
                "consumer of %s: the store still does not answer (%s); asking again in %.1f s",
                self.transport.description,
                type(exc).__name__,
                self._outage,
            )
            return False
        with self._lock:
            self._store_down = False
            self._probing = True  # one message first: it may answer reads and not take writes (a locked file)
        logger.warning("consumer of %s: the store answers again; taking messages", self.transport.description)
        return True

    def _retry(self, message: Message, key: str, why: str, event: Event) -> str:
        with self._lock:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            if len(self._failures) > 10_000:  # forget the oldest; a count only sets a backoff
                self._failures.pop(next(iter(self._failures)))
            self.stats.retried += 1
        delay = min(self.retry_backoff * 2 ** (failures - 1), self.max_backoff)
        logger.warning("event %s (%s): %s; delivered again in %.1f s", event.id, event.trigger, why, delay)
        last = getattr(self.transport, "max_receives", None)
        if isinstance(last, int) and message.attempt >= last:
            logger.error(
                "event %s (%s): that was its receive %d, the last the queue's redrive policy allows"
                " (maxReceiveCount %d): the queue moves it to its dead-letter queue; redrive it from there",
                event.id,
                event.trigger,
                message.attempt,
                last,
            )
        try:
            self.transport.retry(message, delay)
        except Exception as exc:  # noqa: BLE001 - unacknowledged either way
            logger.warning("event %s: cannot give the message back (%s); the queue delivers it again", key, exc)
        return "retried"

    def _poison(self, message: Message, reason: str, status: str, started: float) -> str:
        with self._lock:
            self.stats.poison += 1
        self._answered(status, 413 if status == "too_large" else 400, None, started)
        try:
            done = self.transport.dead_letter(message, reason)
        except Exception as exc:  # noqa: BLE001 - the loop never dies of a message
            done = f"cannot dead-letter it ({type(exc).__name__}); the queue delivers it again"
        logger.error(
            "message %s (%d bytes) from %s is not an Elastic Path CloudEvent: %s; %s",
            message.message_id,
            len(message.body),
            self.transport.description,
            reason,
            done,
        )
        return "poison"

    def _summary(self) -> str:
        outcomes = ", ".join(f"{name} {count}" for name, count in sorted(self.stats.outcomes.items())) or "none"
        return (
            f"{self.stats.acked} acknowledged ({outcomes}), {self.stats.retried} given back,"
            f" {self.stats.poison} dead-lettered"
        )
