"""Is this receiver healthy: the store answers, the backlog is under its limit and young, the workers are alive.

:func:`check_health` is what ``flask webhooks health`` prints and what the
readiness endpoint (``WEBHOOK_RECEIVER_HEALTH_URL``) answers. Nothing in a
report comes from the store's location or the app's secrets: a check that
fails names the kind of error only.

A store that hangs (a frozen server, a lock held) must not hang the probe
past its own timeout: :class:`StoreProbe` asks the store in a thread of its
own and waits at most ``WEBHOOK_RECEIVER_HEALTH_TIMEOUT`` seconds for it, and
starts no second thread while the first is still waiting on the store, so
that a probe every few seconds against a hung store holds one thread, not
one more each time.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..stores.base import EventStore
from .backlog import BacklogReader, read_backlog

__all__ = ["Check", "HealthReport", "StoreProbe", "check_health", "HEALTHY", "DEGRADED", "DOWN"]

#: Everything answers.
HEALTHY = "healthy"
#: Events wait too long or too many wait; the process still takes deliveries.
DEGRADED = "degraded"
#: The store does not answer, or this process's workers stopped.
DOWN = "down"

_RANK = {HEALTHY: 0, DEGRADED: 1, DOWN: 2}

#: The default ``WEBHOOK_RECEIVER_HEALTH_MAX_AGE``: seconds the oldest due event may wait.
DEFAULT_MAX_AGE = 300.0

#: The default ``WEBHOOK_RECEIVER_HEALTH_TIMEOUT``: seconds a check waits for the store before it says down
#: (below the 5 s a store's own socket timeouts take, and below the usual probe timeouts).
DEFAULT_TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    """One check: its name, ``healthy`` / ``degraded`` / ``down`` (or ``skipped``), and what it found."""

    name: str
    status: str
    detail: str


@dataclass
class HealthReport:
    """The checks of one or more receivers, and the worst of them.

    :param checks: each receiver's checks, by receiver name.
    """

    checks: dict[str, list[Check]] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """The worst status of any check."""
        worst = HEALTHY
        for checks in self.checks.values():
            for check in checks:
                if _RANK.get(check.status, 0) > _RANK[worst]:
                    worst = check.status
        return worst

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 degraded, 2 down."""
        return _RANK[self.status]

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "status": self.status,
            "receivers": {
                name: {c.name: {"status": c.status, "detail": c.detail} for c in checks}
                for name, checks in self.checks.items()
            },
        }


def check_health(
    store: EventStore,
    dispatcher: Any,
    *,
    max_age: float = DEFAULT_MAX_AGE,
    workers: bool = True,
    backlog: BacklogReader | None = None,
) -> list[Check]:
    """The checks of one receiver, made in the calling thread (however long the store takes).

    The store is asked for its due events each time (one indexed count); the
    age of the oldest and the failed events come from *backlog*, which reads
    them at most once per its interval, in the background.
    :meth:`StoreProbe.check` makes the same checks with a time limit.

    :param store: its store.
    :param dispatcher: its dispatcher; a background one has a backlog limit
        (``max_backlog``) and, once started in this process, workers.
    :param max_age: seconds the oldest due event may wait before the
        receiver is degraded.
    :param workers: check the workers of this process (``False`` in a CLI
        command, whose process runs none).
    :param backlog: the receiver's backlog reader (one reading afresh each
        time by default).
    """
    checks = _store_checks(store, dispatcher, max_age, backlog)
    checks.append(_workers(dispatcher, workers))
    return checks


def _store_checks(store: EventStore, dispatcher: Any, max_age: float, backlog: BacklogReader | None) -> list[Check]:
    """The checks that ask the store: it answers, the backlog's size, its oldest due event, the failed ones."""
    checks: list[Check] = []
    try:
        due = store.count_due()
    except Exception as exc:  # noqa: BLE001 - whatever it is, the store did not answer
        checks.append(Check("store", DOWN, f"the {store.name} store does not answer ({type(exc).__name__})"))
        checks.append(Check("backlog", "skipped", "the store does not answer"))
        return checks
    checks.append(Check("store", HEALTHY, f"the {store.name} store answers"))
    limit = getattr(dispatcher, "max_backlog", None)
    if isinstance(limit, int) and due >= limit:
        checks.append(Check("backlog", DEGRADED, f"{due} events due, the limit is {limit}"))
    else:
        checks.append(Check("backlog", HEALTHY, f"{due} events due" + (f" of {limit}" if limit else "")))
    try:
        found = backlog.read(wait=True) if backlog is not None else read_backlog(store)
        assert found is not None
    except Exception as exc:  # noqa: BLE001 - the store answered the count: only these are unknown
        checks.append(Check("oldest_due", "skipped", f"cannot be read ({type(exc).__name__})"))
    else:
        age = found.oldest_due_age
        if age is not None and age > max_age:
            detail = f"the oldest due event waits for {age:.0f} s (> {max_age:g})"
            checks.append(Check("oldest_due", DEGRADED, detail))
        else:
            checks.append(Check("oldest_due", HEALTHY, "none due" if age is None else f"{age:.0f} s"))
        checks.append(Check("failed", HEALTHY, f"{found.failed} events failed"))
    return checks


class _Asking:
    """One run of the store's checks in a thread of its own: when it started, in which process, what it found."""

    __slots__ = ("started", "pid", "done", "checks")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.pid = os.getpid()
        self.done = threading.Event()
        self.checks: list[Check] = []


class StoreProbe:
    """One receiver's checks with a time limit: the store is asked in a thread, at most one at a time.

    :param store: the receiver's store.
    :param dispatcher: its dispatcher.
    :param backlog: its backlog reader.
    """

    def __init__(self, store: EventStore, dispatcher: Any, backlog: BacklogReader | None) -> None:
        self.store, self.dispatcher, self.backlog = store, dispatcher, backlog
        self._lock = threading.Lock()
        self._asking: _Asking | None = None

    def start(self, max_age: float, app: Any) -> _Asking:
        """Ask the store in a thread, unless a run of this process still waits on it: then that run.

        :param max_age: seconds the oldest due event may wait before the receiver is degraded.
        :param app: the Flask app whose context the thread runs in (a store may read it, as it
            would in the request that asks).
        """
        with self._lock:
            asking = self._asking
            if asking is not None and asking.pid == os.getpid() and not asking.done.is_set():
                return asking  # the store has not answered the last one yet: a second thread would wait too
            asking = self._asking = _Asking()
        thread = threading.Thread(
            target=self._ask, args=(asking, max_age, app), name="webhook-receiver-health", daemon=True
        )
        thread.start()
        return asking

    def _ask(self, asking: _Asking, max_age: float, app: Any) -> None:
        try:
            with app.app_context():
                asking.checks = _store_checks(self.store, self.dispatcher, max_age, self.backlog)
        except BaseException as exc:  # noqa: BLE001 - never an empty, healthy-looking report, nor a traceback
            # (a BaseException too: a SystemExit, a gevent Timeout, a CancelledError ended the thread with none)
            detail = f"the {self.store.name} store was not checked ({type(exc).__name__})"
            asking.checks = [Check("store", DOWN, detail)]
        finally:
            asking.done.set()

    def check(self, asking: _Asking, *, deadline: float, workers: bool = True) -> list[Check]:
        """The checks, the store's waited for until *deadline* (``time.monotonic()``) at most.

        :param asking: the run :meth:`start` began.
        :param deadline: when a store that has not answered is said to be down.
        :param workers: check the workers of this process.
        """
        if asking.done.wait(max(0.0, deadline - time.monotonic())):
            checks = list(asking.checks)
        else:
            waited = time.monotonic() - asking.started
            checks = [
                Check("store", DOWN, f"the {self.store.name} store has not answered in {waited:.1f} s"),
                Check("backlog", "skipped", "the store does not answer"),
            ]
        checks.append(_workers(self.dispatcher, workers))
        return checks


def _workers(dispatcher: Any, checked: bool = True) -> Check:
    """The background threads of *dispatcher* in this process, if it runs any (and they are *checked*)."""
    if not checked:
        return Check("workers", "skipped", "no workers in this process")
    threads: list[threading.Thread] | None = getattr(dispatcher, "_threads", None)
    if threads is None:
        return Check("workers", "skipped", f"{getattr(dispatcher, 'name', '') or 'this'} dispatch has no workers")
    stopping = getattr(dispatcher, "_stopping", None)
    if getattr(dispatcher, "_pid", 0) != os.getpid() or (stopping is not None and stopping.is_set()):
        return Check("workers", DOWN, "the workers of this process are not running")
    alive = sum(thread.is_alive() for thread in threads)
    if alive < len(threads) or not threads:
        return Check("workers", DOWN, f"{alive} of {len(threads)} threads alive")
    return Check("workers", HEALTHY, f"{alive} threads alive")
