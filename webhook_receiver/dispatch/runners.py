"""Threads of the process that run inline handlers, so that a request can answer before they end.

A WSGI server answers when the app returns, so handlers that must be able to
outlive their request cannot run in the request's own thread. :class:`Runners`
keeps daemon threads for them, reused from one delivery to the next (handing
a job to a waiting thread is cheaper than starting one), started again in a
forked child, and joined for a grace period when the process stops.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
import weakref
from typing import TYPE_CHECKING, Callable

from flask.globals import _cv_app  # app_ctx's variable: read straight, not through its LocalProxy
from flask.signals import appcontext_popped, appcontext_pushed, appcontext_tearing_down

from ..untrusted import logger

if TYPE_CHECKING:
    from flask import Flask
    from flask.ctx import AppContext

__all__ = ["Carried", "Runners", "carried_variables", "handlers_context", "keep_app_context"]


#: Every pool alive in this process, reset in a forked child.
_POOLS: weakref.WeakSet[Runners] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for pool in list(_POOLS):
        pool._reset()


os.register_at_fork(after_in_child=_reset_after_fork)


class Runners:
    """A pool of daemon threads that grows to the number of jobs running at once.

    :param name: the threads' name, after ``webhook-receiver-``.
    :param idle_seconds: a thread with no job for this long ends.
    """

    def __init__(self, name: str = "inline", *, idle_seconds: float = 60.0) -> None:
        self.name = name
        self.idle_seconds = idle_seconds
        self._reset()
        _POOLS.add(self)

    def _reset(self) -> None:
        """A fresh state: at creation, and in a forked child (the parent's threads did not come along)."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._waiting = 0  # threads waiting for a job that no submit has claimed yet
        self._busy = 0
        self._started = 0
        self._joining = 0  # join() calls waiting for the jobs to end: only they need the condition notified

    @property
    def busy(self) -> int:
        """Jobs running or about to."""
        return self._busy

    def submit(self, job: Callable[[], None]) -> None:
        """Run *job* in a thread of the pool: one that waits for work, else a new one.

        *job* should handle its own errors; one that escapes is logged.
        """
        with self._lock:
            self._busy += 1
            reuse = self._waiting > 0
            if reuse:
                self._waiting -= 1
            else:
                self._started += 1
                number = self._started
        if reuse:
            self._jobs.put(job)
            return
        jobs = self._jobs
        thread = threading.Thread(
            target=self._loop, args=(jobs, job), name=f"webhook-receiver-{self.name}-{number}", daemon=True
        )
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._busy -= 1
            raise

    def _loop(self, jobs: queue.SimpleQueue[Callable[[], None]], job: Callable[[], None]) -> None:
        while True:
            try:
                job()
            except BaseException:  # noqa: BLE001 - a runner must not die of a job
                logger.exception("a handler run failed outside its error handling")
            with self._lock:
                if jobs is not self._jobs:  # a fork reset the pool: this is a stale thread
                    return
                self._busy -= 1
                self._waiting += 1
                if not self._busy and self._joining:  # what join() waits for
                    self._changed.notify_all()
            while True:
                try:
                    job = jobs.get(timeout=self.idle_seconds)
                    break
                except queue.Empty:
                    with self._lock:
                        if self._waiting > 0:  # no job is on its way to this thread: end it
                            self._waiting -= 1
                            return
                    # every waiting thread has a job on its way: take one

    def join(self, timeout: float) -> int:
        """Wait up to *timeout* seconds for the running jobs to end; how many still run."""
        with self._changed:
            self._joining += 1
            try:
                self._changed.wait_for(lambda: self._busy == 0, timeout)
            finally:
                self._joining -= 1
            return self._busy


#: The context variables seen to be Flask's own (the app's and the request's contexts), by name.
_FLASK_VARIABLES: set[contextvars.ContextVar[object]] = set()


def _is_flasks(variable: contextvars.ContextVar[object]) -> bool:
    if variable in _FLASK_VARIABLES:
        return True
    if variable.name.startswith("flask."):
        _FLASK_VARIABLES.add(variable)
        return True
    return False


#: What :func:`carried_variables` gives: context variables and their values.
Carried = list[tuple["contextvars.ContextVar[object]", object]]


def carried_variables() -> Carried:
    """The calling thread's context variables and their values, less Flask's, for a run in another thread.

    A run keeps what the caller's context carries (a trace's current span, a
    logging context, the decimal context) but not the request: the request
    ends, and its teardown (Flask-SQLAlchemy removing the session, for one)
    would pull things from under a handler that still runs. The run has an
    app context of its own (:func:`handlers_context`); the run sets the
    variables in its own copy of the runner thread's context.
    """
    return [
        (variable, value)
        for variable, value in contextvars.copy_context().items()
        if variable not in _FLASK_VARIABLES and not _is_flasks(variable)
    ]


#: Per runner thread: the app context kept pushed from one run to the next (see :func:`handlers_context`).
_KEPT = threading.local()


def _unobserved(app: Flask) -> bool:
    """Whether nothing sees an app context of *app* start or end: no teardown function, no signal receiver."""
    return not (
        app.teardown_appcontext_funcs
        or appcontext_pushed.receivers
        or appcontext_tearing_down.receivers
        or appcontext_popped.receivers
    )


class _Renewal:
    """The end of a run in a kept app context: a fresh :data:`flask.g` (the run's let go), the context kept."""

    __slots__ = ("context",)

    def __init__(self, context: AppContext) -> None:
        self.context = context

    def __call__(self, exc: BaseException | None = None) -> None:
        self.context.g = self.context.app.app_ctx_globals_class()


def keep_app_context(app: Flask) -> _Renewal | None:
    """In a runner thread's own context, before a run's copy of it is made: the app context kept from run to run.

    Only when nothing would see an app context start or end (no
    ``teardown_appcontext`` function, no receiver of Flask's app context
    signals): the thread then keeps one of *app*'s pushed in its own
    context, pushed here at its first run (or again, should it be gone).
    What a run, in a copy of that context, pushes, sets or leaves behind
    stays in its copy.

    :returns: what gives the kept context a fresh :data:`flask.g` at the
        end of a run, for :func:`handlers_context`; ``None`` when none is kept.
    """
    if not _unobserved(app):
        return None
    renewal: _Renewal | None = getattr(_KEPT, "renewal", None)
    if renewal is None or renewal.context.app is not app or _current_app_context() is not renewal.context:
        context = app.app_context()
        context.push()
        renewal = _KEPT.renewal = _Renewal(context)
    return renewal


def handlers_context(app: Flask, kept: _Renewal | None) -> Callable[[BaseException | None], None]:
    """Give a run an app context of *app*; the function that ends it (with the error, if any).

    In a run's copy of its runner thread's context. With *kept* (from
    :func:`keep_app_context`, before the copy was made), the run is in the
    kept app context already, and the function returned gives it a fresh
    :data:`flask.g` (a push and a pop cost more than the handlers of a
    typical delivery). Otherwise (an app whose teardown functions or signal
    receivers would see the context's start and end) a fresh one is pushed,
    and popped by the function returned, its teardown run and its signals
    sent.
    """
    if kept is not None:
        return kept
    context = app.app_context()
    context.push()
    return context.pop


def _current_app_context() -> object:
    """The app context pushed in this thread (the object behind :data:`flask.globals.app_ctx`), or ``None``."""
    return _cv_app.get(None)
