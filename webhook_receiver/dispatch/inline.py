"""Inline dispatch: the handlers run in the request, and the answer reflects them."""
from __future__ import annotations

from typing import Sequence

from .. import signals
from ..events import Event
from ..handlers import Handler
from ..stores.base import ClaimState
from ..untrusted import logger
from .base import Dispatcher, Outcome
from .run import run_handlers

__all__ = ["InlineDispatcher"]


_DUPLICATE = Outcome(200, "duplicate")
_IN_PROGRESS = Outcome(409, "in_progress")
_PROCESSED = Outcome(200, "processed")
_FAILED = Outcome(500, "failed")


class InlineDispatcher(Dispatcher):
    """Runs the handlers in the request: 200 when they all succeeded, 500 when one failed.

    One store write claims the event, one finishes it (the last handler's
    outcome and the status together); a handler before the last adds one.
    """

    name = "inline"

    def dispatch(self, event: Event, handlers: Sequence[Handler] | None = None) -> Outcome:
        app, receiver, store = self._bound()
        claim = store.claim(event)
        if claim.state is ClaimState.DONE:
            return _DUPLICATE
        if claim.state is ClaimState.BUSY:
            return _IN_PROGRESS
        if handlers is None:
            handlers = receiver.handlers_for(event.trigger, app)
        result = run_handlers(app, event, handlers, store, claim, receiver=receiver)
        if result.lost:
            return _IN_PROGRESS
        if not store.finish(claim, ok=not result.failed, last=result.last):
            logger.warning("event %s: the lease was taken over by another worker before this request"
                           " finished; its outcome is not recorded", event.id)
            return _IN_PROGRESS
        if result.failed:
            return _FAILED
        signals.send_isolated(signals.event_handled, app, event=event, receiver=receiver)
        return _PROCESSED
