"""``flask webhooks`` commands on the event store: events, show, replay, resolve, prune."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

import click
from flask import current_app

from ..cloudevents import transport_of
from ..dispatch.run import process_stored
from ..inbox.actions import plan_bulk
from ..inbox.query import Filters, when
from ..redact import hide_passwords
from ..stores.base import MAX_DELIVERIES, EventStatus, StoredEvent
from ..untrusted import printable
from .group import (
    DURATION,
    LIMIT,
    json_option,
    one_line_errors,
    receiver_named,
    receiver_option,
    say,
    webhooks_cli,
)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@webhooks_cli.command("events")
@click.option("--status", type=click.Choice([s.value for s in EventStatus]), help="Only events with this status.")
@click.option("--trigger", help="Only events with this trigger.")
@click.option("--since", type=DURATION, help="Only events received within this long, such as 2h or 7d.")
@click.option("--limit", type=LIMIT, default=50, show_default=True, help="At most this many.")
@json_option
@receiver_option
@one_line_errors
def events_command(
    status: str | None, trigger: str | None, since: float | None, limit: int, as_json: bool, receiver_name: str | None
) -> None:
    """List stored events, newest first."""
    store = receiver_named(receiver_name).get_store()
    found = store.events(
        status=EventStatus(status) if status else None,
        trigger=trigger,
        since=time.time() - since if since is not None else None,
        limit=limit,
    )
    if as_json:
        click.echo(json.dumps([_summary(stored) for stored in found], indent=2))
        return
    if not found:
        say("no events")
        return
    rows = [
        (
            _when(s.received_at),
            printable(s.id),
            printable(s.trigger),
            s.status.value,
            printable(transport_of(s.raw)),
            f"{sum(o.ok for o in s.handlers.values())}/{len(s.handlers)}",
        )
        for s in found
    ]
    header = ("received (UTC)", "id", "trigger", "status", "via", "handlers ok")
    widths = [max(len(row[n]) for row in [header, *rows]) for n in range(len(header))]
    for row in [header, *rows]:
        say("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _summary(stored: StoredEvent) -> dict[str, Any]:
    """A stored event as JSON, its body left out."""
    return {
        "id": stored.id,
        "trigger": stored.trigger,
        "status": stored.status.value,
        "transport": transport_of(stored.raw),
        "received_at": stored.received_at,
        "updated_at": stored.updated_at,
        "attempts": stored.attempts,
        "due_at": stored.due_at,
        "error": stored.error,
        "handlers": {
            name: {
                "ok": o.ok,
                "error": o.error,
                "attempts": o.attempts,
                "skipped": o.skipped,
                "started_at": o.started_at,
                "finished_at": o.finished_at,
            }
            for name, o in stored.handlers.items()
        },
    }


@webhooks_cli.command("show")
@click.argument("event_id")
@json_option
@receiver_option
@one_line_errors
def show_command(event_id: str, as_json: bool, receiver_name: str | None) -> None:
    """Show one stored event (redacted) and each handler's outcome."""
    store = receiver_named(receiver_name).get_store()
    stored = store.get(event_id)
    if stored is None:
        raise click.ClickException(printable(f"no stored event {event_id!r}"))
    deliveries = store.deliveries(event_id)
    if as_json:
        log = [attempt._asdict() for attempt in deliveries]
        shown = json.dumps(dict(_summary(stored), body=stored.raw, deliveries=log), indent=2, sort_keys=True)
        click.echo(hide_passwords(shown))  # the echoed integration URL may carry a basic-auth password
        return
    say(f"event {stored.id}  {stored.trigger}  {stored.status.value}")
    say(f"received {_when(stored.received_at)}, updated {_when(stored.updated_at)}, runs: {stored.attempts}")
    if stored.due_at is not None:
        say(f"due {_when(stored.due_at)}")
    if stored.error:
        say(f"FAILED without running its handlers: {stored.error}")
    for outcome in stored.handlers.values():
        state = "ok" if outcome.ok else f"FAILED: {outcome.error}"
        say(f"  {outcome.name}: {state} (runs: {outcome.attempts}, last {_when(outcome.finished_at)})")
    if deliveries:
        say(f"deliveries after the first ({len(deliveries)}, the newest {MAX_DELIVERIES} kept):")
    for attempt in deliveries:
        number = f" attempt {attempt.attempt}" if attempt.attempt is not None else ""
        answer = f"{attempt.code} {attempt.answer}" if attempt.code is not None else attempt.answer
        by = f" by {attempt.by}" if attempt.by else ""
        say(f"  {_when(attempt.at)} {attempt.via}{number}{by}: {answer}")
    click.echo(hide_passwords(json.dumps(stored.raw, indent=2, sort_keys=True)))


@webhooks_cli.command("replay")
@click.argument("event_id", required=False)
@click.option(
    "--failed",
    "all_failed",
    is_flag=True,
    help="Every failed event, and every event left pending or processing past its lease.",
)
@click.option("--since", type=DURATION, help="Only events received within this long, such as 2h (implies --failed).")
@click.option(
    "--trigger", help="Only events with this trigger, wildcards as in @receiver.on: 'order.*' (implies --failed)."
)
@click.option("--dry-run", is_flag=True, help="Say which events would be replayed; run nothing.")
@receiver_option
@one_line_errors
def replay_command(
    event_id: str | None,
    all_failed: bool,
    since: float | None,
    trigger: str | None,
    dry_run: bool,
    receiver_name: str | None,
) -> None:
    """Run again the handlers that did not succeed, here and now.

    Exits 1 when an event replayed is still failing or cannot be rebuilt
    (with --failed: any of them, after the others ran).
    """
    all_failed = all_failed or since is not None or bool(trigger)
    if bool(event_id) == all_failed:
        raise click.UsageError("give an event ID or --failed (--since, --trigger): one of them")
    receiver = receiver_named(receiver_name)
    store = receiver.get_store()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if event_id:
        if store.get(event_id) is None:
            raise click.ClickException(printable(f"no stored event {event_id!r}"))
        ids = [event_id]
    else:
        now = time.time()
        since_at = now - since if since is not None else None
        filters = Filters(
            trigger=trigger or "", since=since_at, since_text=when(since_at).replace(" ", "T") if since_at else ""
        )
        plan = plan_bulk(store, filters, now, limit=None)
        ids = plan.ids
        if dry_run:
            say(f"would replay {len(ids)} {plan.filters.describe(len(ids))}" + (":" if ids else ""))
            for one in ids:
                say(f"  {one}")
            return
    if dry_run:
        stored = store.get(ids[0])
        state = stored.status.value if stored else "missing"
        say(f"would replay {ids[0]} ({state}): the handlers that did not succeed")
        return
    counts: dict[str, int] = {}
    with click.progressbar(
        ids, label=f"replaying {len(ids)} event{'s' if len(ids) != 1 else ''}", show_pos=True
    ) as bar:
        for one in bar:
            result = process_stored(app, receiver, store, one, by="flask webhooks replay")
            counts[result.state] = counts.get(result.state, 0) + 1
            if event_id and result.state == "missing":
                raise click.ClickException(f"no stored event {one!r}")
            if event_id and result.state == "failed":
                raise click.ClickException(printable(f"event {one}: still failing: {', '.join(result.failed)}"))
            if event_id and result.state == "unreadable":
                raise click.ClickException(printable(f"event {one}: the stored body cannot be rebuilt: {result.error}"))
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "nothing to replay"
    say(summary)
    if ids and not counts.get("processed") and not counts.get("duplicate"):
        raise click.ClickException("no replayed event was processed")
    left = counts.get("failed", 0) + counts.get("unreadable", 0)
    if left:  # some succeeded, not all: a script that checks the status must hear of the rest
        raise click.ClickException(
            f"{left} replayed event{'s' if left != 1 else ''} did not succeed: flask webhooks events --status failed"
            " lists them"
        )


@webhooks_cli.command("resolve")
@click.argument("event_id")
@receiver_option
@one_line_errors
def resolve_command(event_id: str, receiver_name: str | None) -> None:
    """Mark a failed event resolved: kept, out of replay --failed and the failed view."""
    store = receiver_named(receiver_name).get_store()
    try:
        done = store.resolve(event_id)
    except NotImplementedError:
        raise click.ClickException(f"the {store.name} store cannot mark events resolved") from None
    if not done:
        stored = store.get(event_id)
        if stored is None:
            raise click.ClickException(printable(f"no stored event {event_id!r}"))
        raise click.ClickException(printable(f"event {event_id} is {stored.status.value}, not failed: left as it is"))
    say(f"event {event_id} resolved")


@webhooks_cli.command("prune")
@click.option(
    "--older-than",
    "older_than",
    type=DURATION,
    required=True,
    help="Such as 30d: forget processed events received longer ago than that.",
)
@click.option(
    "--include-failed", is_flag=True, help="Forget failed and resolved events too (never handled: check them first)."
)
@click.option("--dry-run", is_flag=True, help="Say how many would be forgotten; forget nothing.")
@receiver_option
@one_line_errors
def prune_command(older_than: float, include_failed: bool, dry_run: bool, receiver_name: str | None) -> None:
    """Forget processed events received before a given age (failed ones with --include-failed; pending never)."""
    count = (
        receiver_named(receiver_name)
        .get_store()
        .prune(time.time() - older_than, include_failed=include_failed, dry_run=dry_run)
    )
    plural = "s" if count != 1 else ""
    say(f"would prune {count} event{plural}" if dry_run else f"pruned {count} event{plural}")
