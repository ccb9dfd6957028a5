"""``flask webhooks listen``: every change to the store's events, as it happens, from any process.

The store answers ``events(status, trigger, since, limit)``, newest first, and
no "changed since": the watch reads every event received since a *horizon*
and moves the horizon up past the events that can no longer change (processed
ones; failed ones are followed apart, since a redelivery or a replay runs them
again). A burst of any size is shown whole: nothing is cut at a page size.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import click

from ..dispatch.queue import QueueDispatcher
from ..stores.base import EventStatus, EventStore, StoredEvent
from ..untrusted import printable
from .group import LIMIT, FiniteFloat, json_option, one_line_errors, receiver_named, receiver_option, say, webhooks_cli
from .operations import _summary

__all__ = ["Change", "StoreWatch"]

#: How far behind the newest event the horizon stays: an event another process
#: stamped earlier may be committed a little later.
SLACK_SECONDS = 10.0

_State = tuple[str, int, tuple[tuple[str, int], ...]]


def _state(stored: StoredEvent) -> _State:
    return (
        stored.status.value,
        stored.attempts,
        tuple(sorted((name, o.attempts) for name, o in stored.handlers.items())),
    )


@dataclass(frozen=True)
class Change:
    """An event seen in a new state.

    :param event: the event as the store now has it.
    :param first: whether the watch had not seen the event before.
    :param ran: the names of the handlers that ran since the event was last seen.
    """

    event: StoredEvent
    first: bool
    ran: tuple[str, ...]

    @property
    def took_ms(self) -> float | None:
        """How long the handlers that ran took, first start to last end, in milliseconds."""
        outcomes = [self.event.handlers[name] for name in self.ran]
        if not outcomes:
            return None
        return (max(o.finished_at for o in outcomes) - min(o.started_at for o in outcomes)) * 1000


class StoreWatch:
    """What changed in a store since the last :meth:`look`, for events received since *since*.

    :param store: the store to watch.
    :param since: events received before this time (epoch seconds) are not watched.
    :param trigger: only events with this trigger.
    """

    def __init__(self, store: EventStore, *, since: float, trigger: str | None = None) -> None:
        self.store = store
        self.since = since
        self.trigger = trigger
        #: Every event received before this is processed and shown, or in :attr:`followed`.
        self.horizon = since
        #: The events received before :attr:`horizon` that are not processed yet (failed ones, and those
        #: a redelivery or a replay is running again): each look reads them by id.
        self.followed: set[str] = set()
        self._seen: dict[str, tuple[_State, float]] = {}
        #: Per event, the state at the last look that found it not running: what a finished run's line
        #: names as having run is counted from there, so that a look landing mid-run hides no handler.
        self._settled: dict[str, _State | None] = {}

    def look(self) -> list[Change]:
        """The events whose status, runs or handler outcomes changed since the last look, oldest change first."""
        now = time.time()
        recent = self.store.events(since=self.horizon, trigger=self.trigger)
        found = {stored.id: stored for stored in recent}
        if self.followed:  # failed events below the horizon run again on a redelivery or a replay
            for stored in self.store.events(status=EventStatus.FAILED, since=self.since, trigger=self.trigger):
                found.setdefault(stored.id, stored)
            for moved in self.followed - found.keys():
                again = self.store.get(moved)
                if again is not None:
                    found[moved] = again
        changes = []
        for stored in sorted(found.values(), key=lambda s: (s.updated_at, s.received_at, s.id)):
            state = _state(stored)
            before = self._seen.get(stored.id)
            if before is not None and before[0] == state:
                continue
            self._seen[stored.id] = (state, stored.received_at)
            settled = self._settled.get(stored.id)
            changes.append(Change(stored, before is None, _ran(stored, settled)))
            if stored.status is not EventStatus.PROCESSING:
                self._settled[stored.id] = state
            else:
                self._settled.setdefault(stored.id, None)
        self._advance(recent, found, now)
        return changes

    def _advance(self, recent: list[StoredEvent], found: dict[str, StoredEvent], now: float) -> None:
        open_ = [s.received_at for s in recent if s.status in (EventStatus.PENDING, EventStatus.PROCESSING)]
        newest = max((s.received_at for s in recent), default=self.horizon)
        horizon = max(self.horizon, min(min(open_, default=newest), now - SLACK_SECONDS))
        self.followed = {
            i for i, s in found.items() if s.status is not EventStatus.PROCESSED and s.received_at < horizon
        }
        self.horizon = horizon
        self._seen = {i: seen for i, seen in self._seen.items() if seen[1] >= horizon or i in self.followed}
        self._settled = {i: state for i, state in self._settled.items() if i in self._seen}


def _ran(stored: StoredEvent, before: _State | None) -> tuple[str, ...]:
    """The handlers that ran since *before*: their attempts grew (all of them, at the first run)."""
    if before is None:
        if stored.attempts <= 1:
            return tuple(stored.handlers)
        most = max((o.attempts for o in stored.handlers.values()), default=0)
        return tuple(name for name, o in stored.handlers.items() if o.attempts == most)
    earlier = dict(before[2])
    return tuple(name for name, o in stored.handlers.items() if o.attempts > earlier.get(name, 0))


#: The answer an inline delivery got, by the status it left.
_INLINE_ANSWERS = {
    EventStatus.PROCESSED: "200 processed",
    EventStatus.FAILED: "500 failed",
    EventStatus.PENDING: "202 accepted",
}


def _report(change: Change, background: bool) -> list[dict[str, Any]]:
    """What to show of *change*: a delivery (the answer upstream got) and, in the background, a run."""
    stored = change.event
    upstream_attempt = stored.raw.get("attempt") if isinstance(stored.raw, dict) else None
    base = {**_summary(stored), "attempt": stored.attempts, "upstream_attempt": upstream_attempt}
    took = change.took_ms
    reports: list[dict[str, Any]] = []
    if stored.status is EventStatus.RESOLVED:  # an operator's mark: no delivery, no run
        return [{**base, "kind": "run", "answer": None, "outcome": "resolved by an operator", "took_ms": None}]
    if background:
        if change.first:  # every delivery of a background receiver is answered 202 once stored
            reports.append({**base, "kind": "delivery", "answer": "202 accepted", "took_ms": None})
        if stored.status is not EventStatus.PENDING or stored.attempts:
            outcome = stored.status.value
            if stored.status is EventStatus.PENDING:
                outcome = "failed, due again" + (f" at {_clock(stored.due_at)}" if stored.due_at else "")
            elif stored.status is EventStatus.PROCESSING:
                outcome = "... running"
            reports.append({**base, "kind": "run", "answer": None, "outcome": outcome, "took_ms": took})
        return reports
    if stored.status is EventStatus.PROCESSING:
        return [{**base, "kind": "delivery", "answer": "... running", "took_ms": None}]
    return [{**base, "kind": "delivery", "answer": _INLINE_ANSWERS[stored.status], "took_ms": took}]


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def _line(report: dict[str, Any], stored: StoredEvent, ran: tuple[str, ...]) -> str:
    took = f" {report['took_ms']:.1f} ms" if report["took_ms"] is not None else ""
    if report["kind"] == "delivery":
        head = f"--> {stored.trigger} {stored.id}"
        if report["attempt"]:
            head += f" attempt {report['attempt']}"
        parts = [head, f"<-- {report['answer']}{took}"]
    else:
        parts = [f"=== {stored.trigger} {stored.id} attempt {report['attempt']}", f"{report['outcome']}{took}"]
    if report["answer"] != "202 accepted" and report.get("answer") != "... running":
        outcomes = ", ".join(
            f"{name.rpartition('.')[2]} {'ok' if o.ok else 'failed'}" + (f" ({o.error})" if o.error else "")
            for name, o in stored.handlers.items()
            if name in ran
        )
        if outcomes:
            parts.append(outcomes)
    if stored.error:
        parts.append(stored.error)
    return "  ".join(parts)


@webhooks_cli.command("listen")
@click.option("--trigger", help="Only events with this trigger.")
@click.option("--status", type=click.Choice([s.value for s in EventStatus]), help="Only changes to this status.")
@click.option(
    "--interval",
    default=0.5,
    show_default=True,
    type=FiniteFloat(min=0.05, max=3600),
    help="Seconds between looks (0.05 to 3600).",
)
@click.option("--limit", type=LIMIT, help="Stop after this many lines.")
@click.option("--seconds", type=FiniteFloat(min=0), help="Stop after this many seconds.")
@json_option
@receiver_option
@one_line_errors
def listen_command(
    trigger: str | None,
    status: str | None,
    interval: float,
    limit: int | None,
    seconds: float | None,
    as_json: bool,
    receiver_name: str | None,
) -> None:
    """Show deliveries as they land and what became of them, from any process sharing the store; Ctrl-C stops.

    One line each time an event received since the command started changes:
    the trigger, the id, the attempt (the event's run number: each
    redelivery or retry is one more), the answer upstream got, how long the
    handlers that ran took, and their outcomes. A receiver with background
    dispatch answers 202 once an event is stored; each run then has a line
    of its own (===). Every event of a burst is shown, however large.
    """
    receiver = receiver_named(receiver_name)
    store = receiver.get_store()
    background = isinstance(receiver.get_config().dispatcher, QueueDispatcher)
    started = time.time()
    watch = StoreWatch(store, since=started, trigger=trigger)
    lines = 0
    if not as_json:
        say(f"listening for deliveries to {store.name} store ({store.location}); Ctrl-C stops")
    try:
        while (limit is None or lines < limit) and (seconds is None or time.time() < started + seconds):
            for change in watch.look():
                if status and change.event.status.value != status:
                    continue
                for report in _report(change, background):
                    click.echo(json.dumps(report) if as_json else printable(_line(report, change.event, change.ran)))
                    lines += 1
                    if limit is not None and lines >= limit:
                        return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
