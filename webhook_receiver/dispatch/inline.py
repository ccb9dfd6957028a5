"""Inline dispatch: the handlers run in the request, and the answer reflects them."""

from __future__ import annotations

from typing import Sequence

from ..events import Event
from ..handlers import Handler
from .base import Dispatcher, Outcome
from .run import run_now

__all__ = ["InlineDispatcher"]


#: The answer for each state of :func:`~webhook_receiver.dispatch.run.run_now`.
_OUTCOMES = {
    "duplicate": Outcome(200, "duplicate"),
    "busy": Outcome(409, "in_progress"),
    "processed": Outcome(200, "processed"),
    "failed": Outcome(500, "failed"),
}


class InlineDispatcher(Dispatcher):
    """Runs the handlers in the request: 200 when they all succeeded, 500 when one failed.

    One store write claims the event, one finishes it (the last handler's
    outcome and the status together); a handler before the last adds one.
    """

    name = "inline"

    def dispatch(self, event: Event, handlers: Sequence[Handler] | None = None) -> Outcome:
        app, receiver, store = self._bound()
        state, _ = run_now(app, receiver, store, event, handlers)
        return _OUTCOMES[state]
