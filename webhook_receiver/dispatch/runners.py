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
from typing import Callable

from ..untrusted import logger

__all__ = ["Runners", "context_without_flask"]


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
                if not self._busy:  # what join() waits for
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
            self._changed.wait_for(lambda: self._busy == 0, timeout)
            return self._busy


def context_without_flask() -> contextvars.Context:
    """A copy of the calling thread's context variables, less Flask's app and request contexts.

    A run handed to another thread keeps what the caller's context carries
    (a trace's current span, a logging context) but not the request: the
    request ends, and its teardown (Flask-SQLAlchemy removing the session,
    for one) would pull things from under a handler that still runs. The run
    pushes an app context of its own.
    """
    target = contextvars.Context()
    kept = [(var, value) for var, value in contextvars.copy_context().items() if not var.name.startswith("flask.")]
    if kept:  # else (a plain request: Flask's two contexts only) the empty context is the copy

        def fill() -> None:
            for var, value in kept:
                var.set(value)

        target.run(fill)
    return target
