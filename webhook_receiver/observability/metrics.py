"""Prometheus metrics of deliveries, handler runs and the backlog (extra ``[metrics]``: ``prometheus_client``).

Opt-in with ``WEBHOOK_RECEIVER_METRICS``: a path (``"/webhooks/metrics"``)
mounts an endpoint there, with no authentication, so it exists only where
the app names it; a :class:`prometheus_client.CollectorRegistry` adds the
metrics to one the app exposes itself (behind its own access rules).

Counters and histograms are counted as deliveries are answered and handlers
run, into plain dictionaries of the process (:class:`_Tally`) that reach
prometheus_client's metrics when the registry is collected in this process,
and otherwise within :data:`FLUSH_SECONDS`; the backlog gauges are read from
the store when scraped, at most once per
``WEBHOOK_RECEIVER_METRICS_CACHE_SECONDS`` (5) per process. Under gunicorn
with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder
before the server starts: every worker writes its counts there and any
worker's endpoint answers with the sum.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Iterator

from ..catalogue import OBSERVABLE_EVENTS, is_known, is_legacy
from ..events import Event
from ..untrusted import logger
from .backlog import BacklogReader

if TYPE_CHECKING:
    from flask import Flask, Response

__all__ = ["METRIC_NAMES", "MetricsObserver", "metrics_observer"]

#: Every metric this module exposes, without the ``_total`` / ``_bucket`` suffixes.
METRIC_NAMES = (
    "webhook_receiver_deliveries",
    "webhook_receiver_delivery_duration_seconds",
    "webhook_receiver_handler_runs",
    "webhook_receiver_handler_duration_seconds",
    "webhook_receiver_redeliveries",
    "webhook_receiver_queue_due_events",
    "webhook_receiver_queue_oldest_due_age_seconds",
    "webhook_receiver_failed_events",
    "webhook_receiver_store_up",
)

#: The key of ``app.extensions`` holding the app's metrics observer.
METRICS_KEY = "webhook_receiver.metrics"

_DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 8.0, 10.0, float("inf"))
_HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"))
_CATALOGUE = frozenset(OBSERVABLE_EVENTS)
_NOTHING = contextlib.nullcontext()

#: Seconds a count waits, at most, in this process before prometheus_client's metrics hold it (see :class:`_Tally`).
FLUSH_SECONDS = 1.0


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise RuntimeError(
            "WEBHOOK_RECEIVER_METRICS needs prometheus_client: pip install 'webhook_receiver[metrics]'"
        ) from None
    return prometheus_client


def multiprocess() -> bool:
    """Whether prometheus_client counts across processes (``PROMETHEUS_MULTIPROC_DIR`` is set)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"))


class _Families:
    """The counters and histograms, created once per registry (``None``: multiprocess files only)."""

    def __init__(self, registry: Any) -> None:
        prom = _prometheus()
        #: What was counted into these families and not yet written to them.
        self.tally = _Tally(self)
        if registry is not None:  # before the families, so that a collect writes what waits before reading them
            registry.register(_Flush())
        self.deliveries = prom.Counter(
            "webhook_receiver_deliveries",
            "Deliveries answered (queue messages decided), by the answer's status word and the transport.",
            ["receiver", "trigger", "status", "transport"],
            registry=registry,
        )
        self.delivery_duration = prom.Histogram(
            "webhook_receiver_delivery_duration_seconds",
            "How long the answer to a delivery (the decision on a queue message) took.",
            ["receiver", "status", "transport"],
            buckets=_DELIVERY_BUCKETS,
            registry=registry,
        )
        self.handler_runs = prom.Counter(
            "webhook_receiver_handler_runs",
            "Handler runs, by outcome (ok, failed).",
            ["receiver", "handler", "outcome"],
            registry=registry,
        )
        self.handler_duration = prom.Histogram(
            "webhook_receiver_handler_duration_seconds",
            "How long a handler ran.",
            ["receiver", "handler"],
            buckets=_HANDLER_BUCKETS,
            registry=registry,
        )
        self.redeliveries = prom.Counter(
            "webhook_receiver_redeliveries",
            "Deliveries upstream (or the queue) sent again (its attempt above 1).",
            ["receiver", "trigger", "transport"],
            registry=registry,
        )


class _Tally:
    """Counts and observations of one :class:`_Families` not yet written to its metrics, in plain dictionaries.

    Writing a prometheus_client value takes a lock and, in multiprocess mode,
    a write to the process's memory-mapped file: about 8,000 instructions a
    counter and 16,000 a histogram under callgrind, four of them a delivery,
    more than the rest of the metrics' work together. The hot path adds to a
    dictionary instead, under one lock; :meth:`flush` writes each series
    touched since the last flush once (a histogram's buckets and sum, each
    with the total added). It runs when a registry holding the families is
    collected in this process (a :class:`_Flush` registered before them),
    before the endpoint's answer, every :data:`FLUSH_SECONDS` in a thread of
    the process's own (started by the first count, and again in a forked
    child), and at exit: another process's scrape of the multiprocess files
    sees a count within that time. A process killed with SIGKILL loses what
    it counted in its last second.
    """

    __slots__ = ("families", "lock", "counts", "observed", "children", "__weakref__")

    def __init__(self, families: _Families) -> None:
        self.families = families
        self.lock = threading.Lock()
        #: Increments by series: ``(kind, *label values)``, kind ``d``, ``r`` or ``h`` (see :meth:`_child`).
        self.counts: dict[tuple[str, ...], float] = {}
        #: Observations by series (kind ``t`` or ``hd``): the count in each bucket, then the sum in each.
        self.observed: dict[tuple[str, ...], list[float]] = {}
        self.children: dict[tuple[str, ...], Any] = {}
        _TALLIES.add(self)

    def answered(
        self, key: tuple[str, ...], timed: tuple[str, ...], seconds: float, again: tuple[str, ...] | None
    ) -> None:
        """A delivery counted under *key*, its latency under *timed*, a redelivery under *again*."""
        with self.lock:
            counts = self.counts
            counts[key] = counts.get(key, 0) + 1
            if again is not None:
                counts[again] = counts.get(again, 0) + 1
            tally = self.observed.get(timed)
            if tally is None:
                tally = self.observed[timed] = [0.0] * (2 * len(_DELIVERY_BUCKETS))
            position = bisect.bisect_left(_DELIVERY_BUCKETS, seconds)  # the first bound >= seconds, as le means
            tally[position] += 1
            tally[len(_DELIVERY_BUCKETS) + position] += seconds
        if not _FLUSHING:
            _start_flushing()

    def ran(self, key: tuple[str, ...], timed: tuple[str, ...], seconds: float) -> None:
        """A handler run counted under *key*, its duration under *timed*."""
        with self.lock:
            counts = self.counts
            counts[key] = counts.get(key, 0) + 1
            tally = self.observed.get(timed)
            if tally is None:
                tally = self.observed[timed] = [0.0] * (2 * len(_HANDLER_BUCKETS))
            position = bisect.bisect_left(_HANDLER_BUCKETS, seconds)
            tally[position] += 1
            tally[len(_HANDLER_BUCKETS) + position] += seconds
        if not _FLUSHING:
            _start_flushing()

    def flush(self) -> None:
        """Write what waits to the metrics: each series once."""
        with self.lock:
            counts, self.counts = self.counts, {}
            observed, self.observed = self.observed, {}
        for key, amount in counts.items():
            self._child(key).inc(amount)
        for key, tally in observed.items():
            _observe_all(self._child(key), tally)

    def forget(self) -> None:
        """In a forked child: what the parent counted is the parent's to write; a lock of the child's own."""
        self.lock = threading.Lock()
        self.counts, self.observed = {}, {}

    def _child(self, key: tuple[str, ...]) -> Any:
        child = self.children.get(key)
        if child is None:
            families = self.families
            metric = {
                "d": families.deliveries,
                "r": families.redeliveries,
                "h": families.handler_runs,
                "t": families.delivery_duration,
                "hd": families.handler_duration,
            }[key[0]]
            child = self.children[key] = metric.labels(*key[1:])
        return child


def _observe_all(child: Any, tally: list[float]) -> None:
    """Add *tally*'s observations (counts by bucket, then sums by bucket) to the histogram *child*.

    prometheus_client's ``Histogram`` keeps a value per bucket (``_buckets``)
    and the sum (``_sum``), each with ``inc``: each gets its total at once.
    Should a version keep them otherwise, each observation is made with
    ``observe`` at its bucket's mean, which keeps every bucket's count and
    the sum exact.
    """
    size = len(tally) // 2
    buckets: Any = getattr(child, "_buckets", None)
    total: Any = getattr(child, "_sum", None)
    if isinstance(buckets, list) and len(buckets) == size and hasattr(total, "inc"):
        for bucket, count in zip(buckets, tally[:size]):
            if count:
                bucket.inc(count)
        total.inc(sum(tally[size:]))
        return
    for count, seconds in zip(tally[:size], tally[size:]):
        if count:
            mean = seconds / count
            for _ in range(int(count)):
                child.observe(mean)


class _Flush:
    """A collector of no metric: a collect of its registry first writes what every tally of the process holds."""

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        flush_all()
        return iter(())


_TALLIES: weakref.WeakSet[_Tally] = weakref.WeakSet()
#: Whether this process's flushing thread runs (reset in a forked child, which has no such thread).
_FLUSHING = False
_FLUSHING_LOCK = threading.Lock()


def flush_all() -> None:
    """Write every count of this process that waits to prometheus_client's metrics (never raises)."""
    for tally in list(_TALLIES):
        try:
            tally.flush()
        except Exception:  # noqa: BLE001 - counting never breaks a delivery, a scrape or the flushing thread
            logger.exception("metrics: cannot write the counts of this process")


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        flush_all()


def _start_flushing() -> None:
    global _FLUSHING
    with _FLUSHING_LOCK:
        if _FLUSHING:
            return
        threading.Thread(target=_flush_forever, name="webhook-receiver-metrics", daemon=True).start()
        _FLUSHING = True


def _after_fork_in_child() -> None:
    global _FLUSHING, _FLUSHING_LOCK
    _FLUSHING, _FLUSHING_LOCK = False, threading.Lock()
    for tally in list(_TALLIES):
        tally.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(flush_all)

_FAMILIES_LOCK = threading.Lock()
_FAMILIES: weakref.WeakKeyDictionary[Any, _Families] = weakref.WeakKeyDictionary()
_SHARED: dict[str, _Families] = {}
_PRIVATE: dict[str, Any] = {}
_GAUGES: weakref.WeakKeyDictionary[Any, StoreGauges] = weakref.WeakKeyDictionary()


def _families_for(registry: Any) -> _Families:
    """The families registered in *registry*, created the first time (``None``: unregistered, multiprocess)."""
    with _FAMILIES_LOCK:
        if registry is None:
            if "multiprocess" not in _SHARED:
                _SHARED["multiprocess"] = _Families(None)
            return _SHARED["multiprocess"]
        found = _FAMILIES.get(registry)
        if found is None:
            found = _FAMILIES[registry] = _Families(registry)
        return found


def _gauges_for(registry: Any) -> StoreGauges:
    """The one store collector of *registry*, registered in it the first time."""
    with _FAMILIES_LOCK:
        found = _GAUGES.get(registry)
        if found is None:
            found = _GAUGES[registry] = StoreGauges()
            registry.register(found)
        return found


def _private_registry() -> Any:
    """The registry the endpoint serves in a single process: one per process, for every app in it."""
    with _FAMILIES_LOCK:
        if "registry" not in _PRIVATE:
            _PRIVATE["registry"] = _prometheus().CollectorRegistry(auto_describe=True)
        return _PRIVATE["registry"]


class StoreGauges:
    """A collector reading each receiver's backlog from its store at scrape time (at most once per interval)."""

    def __init__(self) -> None:
        self._readers: dict[str, BacklogReader] = {}
        self._lock = threading.Lock()

    def add(self, receiver: str, reader: BacklogReader) -> None:
        """Show *receiver*'s backlog as *reader* reads it (replacing what an earlier app of the same name set)."""
        with self._lock:
            self._readers[receiver] = reader

    def describe(self) -> list[Any]:
        """Nothing: the families are known only once read (prometheus_client then calls :meth:`collect`)."""
        return []

    def collect(self) -> Iterator[Any]:
        """The gauges of every receiver."""
        from prometheus_client.core import GaugeMetricFamily

        due = GaugeMetricFamily(
            "webhook_receiver_queue_due_events", "Events due now and not yet taken by a worker.", labels=["receiver"]
        )
        age = GaugeMetricFamily(
            "webhook_receiver_queue_oldest_due_age_seconds",
            "Seconds since the oldest due event fell due (0 when none is due).",
            labels=["receiver"],
        )
        failed = GaugeMetricFamily(
            "webhook_receiver_failed_events", "Events left failed, for flask webhooks replay.", labels=["receiver"]
        )
        up = GaugeMetricFamily(
            "webhook_receiver_store_up", "1 when the event store answered the last read, else 0.", labels=["receiver"]
        )
        with self._lock:
            readers = sorted(self._readers.items())
        for name, reader in readers:
            try:
                backlog = reader.read(wait=False)
            except Exception as exc:  # noqa: BLE001 - a scrape must answer, with the store marked down
                logger.warning("metrics: cannot read the backlog of receiver %s: %s", name, type(exc).__name__)
                up.add_metric([name], 0.0)
                continue
            if backlog is None:  # the first read runs in the background: no gauges until it is done
                continue
            up.add_metric([name], 1.0)
            due.add_metric([name], float(backlog.due))
            age.add_metric([name], float(backlog.oldest_due_age or 0.0))
            failed.add_metric([name], float(backlog.failed))
        yield from (due, age, failed, up)


class MetricsObserver:
    """Counts one app's deliveries and handler runs (an :class:`~webhook_receiver.instrumentation.Observer`).

    :param families: the metric objects counted into.
    :param gauges: the collector of the registry the metrics are exposed in.
    """

    def __init__(self, families: _Families, gauges: StoreGauges) -> None:
        self.families = families
        self.gauges = gauges
        self.tally = families.tally

    def answered(
        self,
        receiver: str,
        status: str,
        code: int,
        event: Event | None,
        trigger: str | None,
        seconds: float,
        transport: str = "webhook",
    ) -> None:
        label = trigger_label(event, trigger)
        again = ("r", receiver, label, transport) if event is not None and event.attempt > 1 else None
        self.tally.answered(
            ("d", receiver, label, status, transport), ("t", receiver, status, transport), seconds, again
        )

    def watching(self) -> bool:
        """No run is watched: handler runs are counted once over (:meth:`handler_ran`), with no wrapper."""
        return False

    def running(self, receiver: str, event: Event, claim: Any) -> Any:
        return _NOTHING

    def handler(self, receiver: str, event: Event, handler: str) -> Any:
        return _NOTHING

    def handler_ran(self, receiver: str, event: Event, handler: str, ok: bool, seconds: float) -> None:
        """Count a handler's run and its duration (the times its outcome records)."""
        self.tally.ran(("h", receiver, handler, "ok" if ok else "failed"), ("hd", receiver, handler), seconds)

    def before_accept(self, event: Event) -> Event:
        return event

    def flush(self) -> None:
        """Write this observer's waiting counts to prometheus_client's metrics now."""
        self.tally.flush()


def trigger_label(event: Event | None, header: str | None) -> str:
    """The trigger as a bounded label: a catalogue name, else ``other``.

    A verified event's trigger counts when the catalogue knows it (custom
    ``*_ext`` names included); the header of a delivery that was refused
    counts only when it is a catalogue name, so that unauthenticated
    requests cannot make new series.
    """
    if event is not None:
        return event.trigger if is_known(event.trigger) else "other"
    if header is not None and (header in _CATALOGUE or is_legacy(header)):
        return header
    return "other"


def _reads_the_folder(registry: Any) -> bool:
    """Whether *registry* holds a ``MultiProcessCollector`` (True when prometheus_client hides its collectors)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    collectors = getattr(registry, "_collector_to_names", None)  # the registry's own map; no public way to list
    if not isinstance(collectors, dict):
        return True
    return any(isinstance(collector, MultiProcessCollector) for collector in collectors)


def metrics_observer(app: Flask, setting: Any, interval: float) -> MetricsObserver:
    """Set up metrics on *app* as ``WEBHOOK_RECEIVER_METRICS`` (*setting*) says: an endpoint path or a registry.

    :raises RuntimeError: if *setting* is neither, or prometheus_client is missing.
    """
    prom = _prometheus()
    if isinstance(setting, prom.CollectorRegistry):
        if multiprocess() and not _reads_the_folder(setting):
            raise RuntimeError(
                "WEBHOOK_RECEIVER_METRICS is a CollectorRegistry without a MultiProcessCollector while"
                " PROMETHEUS_MULTIPROC_DIR is set: the counts go to that folder and this registry would show"
                " none of them; add prometheus_client.multiprocess.MultiProcessCollector(registry) to it"
            )
        return MetricsObserver(_families_for(None if multiprocess() else setting), _gauges_for(setting))
    if not isinstance(setting, str) or not setting.startswith("/"):
        raise RuntimeError(
            "WEBHOOK_RECEIVER_METRICS is an endpoint path such as '/webhooks/metrics' or a"
            f" prometheus_client CollectorRegistry, not {type(setting).__name__} {setting!r}"[:300]
        )
    if multiprocess():
        families = _families_for(None)
        registry = prom.CollectorRegistry()
        from prometheus_client import multiprocess as mp

        mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = _private_registry()
        families = _families_for(registry)
    observer = MetricsObserver(families, _gauges_for(registry))

    from flask import request
    from prometheus_client.exposition import choose_encoder

    def metrics_view() -> Response:
        flush_all()  # this process's counts, into the files the multiprocess collector reads
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return app.response_class(encoder(registry), content_type=content_type)

    app.add_url_rule(setting, endpoint="webhook_receiver_metrics", view_func=metrics_view, methods=["GET"])
    return observer
