"""Who runs the handlers and when: inline, in a thread pool, or in Celery workers."""

from .base import Dispatcher, Outcome, RetryPolicy
from .inline import InlineDispatcher
from .queue import QueueDispatcher
from .run import ProcessResult, describe, process_stored, run_claimed, run_handlers
from .thread import ThreadDispatcher

__all__ = [
    "Dispatcher",
    "InlineDispatcher",
    "Outcome",
    "ProcessResult",
    "QueueDispatcher",
    "RetryPolicy",
    "ThreadDispatcher",
    "describe",
    "process_stored",
    "run_claimed",
    "run_handlers",
]
