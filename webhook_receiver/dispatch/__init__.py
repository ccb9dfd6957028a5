"""Who runs the handlers and when: inline, in a thread pool, or in Celery workers."""
from .base import Dispatcher, InlineDispatcher, Outcome, RetryPolicy
from .run import ProcessResult, describe, process_stored, run_handlers
from .thread import ThreadDispatcher

__all__ = [
    "Dispatcher",
    "InlineDispatcher",
    "Outcome",
    "ProcessResult",
    "RetryPolicy",
    "ThreadDispatcher",
    "describe",
    "process_stored",
    "run_handlers",
]
