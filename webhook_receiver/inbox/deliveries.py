"""The delivery attempts an event's page lists: the first one told by the event's row, the later ones logged.

A first delivery is never written to the delivery log (that would cost every
delivery a write): its time is the event's received time, its attempt number
the one upstream sent (kept in the body), and its answer follows from the
event's outcome and the receiver's dispatch. Every later delivery and each
replay is in the store's log (:meth:`~webhook_receiver.stores.EventStore.deliveries`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..cloudevents import transport_of
from ..stores.base import DeliveryAttempt, EventStatus, StoredEvent

__all__ = ["AttemptRow", "attempt_rows", "first_answer"]

_BACKGROUND = ("thread", "celery")


@dataclass(frozen=True)
class AttemptRow:
    """One line of the page's delivery attempts.

    :param at: when it came (epoch seconds).
    :param via: ``"webhook"``, a queue's transport, or ``"replay"``.
    :param attempt: the attempt number upstream or the queue gave, if any.
    :param answer: what was answered (``"200 duplicate"``), or the replay's result.
    :param by: who replayed it, when known.
    :param derived: the answer is derived from the event's outcome (the first delivery's).
    """

    at: float
    via: str
    attempt: int | None
    answer: str
    by: str | None = None
    derived: bool = False


def first_answer(stored: StoredEvent, dispatch: str | None, deadline: float | None, later: int) -> str:
    """The answer the first delivery got, as the event's row and the receiver's dispatch tell it.

    :param dispatch: the receiver's dispatcher's name (``"inline"``, ``"thread"``, ...), if known.
    :param deadline: the inline dispatcher's deadline, if any.
    :param later: how many later runs the log shows (replays, redeliveries).
    """
    transport = _transport(stored)
    if dispatch in _BACKGROUND:
        return "202 accepted" if transport == "webhook" else "accepted"
    if dispatch not in (None, "inline"):
        return "not known for this dispatcher"
    took = sum(max(0.0, o.finished_at - o.started_at) for o in stored.handlers.values())
    if deadline is not None and stored.attempts <= 1 and took > deadline:
        return "202 accepted (its handlers outlived the deadline)"
    first_run_ok = stored.status is EventStatus.PROCESSED and stored.attempts <= 1
    if stored.status in (EventStatus.PENDING, EventStatus.PROCESSING) and stored.attempts <= 1:
        word = "no answer yet (running)"
    elif first_run_ok:
        word = "processed"
    else:  # a processed event is never run again: a later run means the first failed
        word = "failed"
    if word.startswith("no answer"):
        return word
    if transport != "webhook":
        return "acknowledged" if word == "processed" else "not acknowledged (failed)"
    return "200 processed" if word == "processed" else "500 failed"


def attempt_rows(
    stored: StoredEvent, log: list[DeliveryAttempt], *, dispatch: str | None, deadline: float | None
) -> list[AttemptRow]:
    """Every delivery attempt of *stored* this store knows of, oldest first: the first one, then *log*."""
    raw: Any = stored.raw
    attempt = raw.get("attempt") if isinstance(raw, dict) else None
    first = AttemptRow(
        at=stored.received_at,
        via=_transport(stored),
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        answer=first_answer(stored, dispatch, deadline, len(log)),
        derived=True,
    )
    rows = [first]
    for entry in log:
        answer = f"{entry.code} {entry.answer}" if entry.code is not None else entry.answer
        rows.append(AttemptRow(entry.at, entry.via, entry.attempt, answer, entry.by))
    return rows


def _transport(stored: StoredEvent) -> str:
    return transport_of(stored.raw)
