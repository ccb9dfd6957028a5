"""The inbox's pages and actions; every untrusted text reaches the page through Jinja's autoescaping."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from flask import Flask, Response, abort, g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..cloudevents import transport_of
from ..redact import hide_passwords
from ..stores.base import MAX_DELIVERIES, EventStatus, EventStore, StoredEvent
from ..untrusted import logger
from . import actions
from .access import who
from .chart import RANGES, count_hours, render_svg
from .csrf import COOKIE, FIELD, HEADER, CsrfTokens
from .deliveries import attempt_rows
from .query import Cursor, Filters, events_page, when
from .upstream import read_upstream_logs

__all__ = ["InboxViews", "SECURITY_HEADERS"]

#: Sent with every page of the inbox: scripts and styles from the inbox's own static files only, no framing,
#: no caching (the pages show events).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_STATUS_ORDER = [s.value for s in EventStatus]
#: The statuses whose ``updated_at`` is when the event's last run ended (or when it was marked resolved).
_FINISHED = (EventStatus.PROCESSED, EventStatus.FAILED, EventStatus.RESOLVED)


class InboxViews:
    """The view functions of one receiver's inbox on one app.

    :param app: the app.
    :param receiver: the receiver whose events it shows.
    :param endpoint: the blueprint's name, for ``url_for``.
    :param tokens: the CSRF tokens.
    """

    def __init__(self, app: Flask, receiver: actions.InboxReceiver, endpoint: str, tokens: CsrfTokens) -> None:
        self.app = app
        self.receiver = receiver
        self.endpoint = endpoint
        self.tokens = tokens

    def __repr__(self) -> str:
        return f"<InboxViews {self.receiver.name!r}>"

    # -- around every request ---------------------------------------------------------

    def before(self) -> None:
        """Give the browser a CSRF nonce if it has none."""
        nonce = request.cookies.get(COOKIE)
        g.webhook_receiver_inbox_new_nonce = None if nonce else self.tokens.new_nonce()
        g.webhook_receiver_inbox_nonce = nonce or g.webhook_receiver_inbox_new_nonce

    def after(self, response: Response) -> Response:
        """Add the security headers, and the nonce cookie when it is new."""
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        new_nonce = g.get("webhook_receiver_inbox_new_nonce")
        if new_nonce:
            response.set_cookie(
                COOKIE,
                new_nonce,
                httponly=True,
                samesite="Strict",
                secure=request.is_secure,
                path=url_for(f"{self.endpoint}.index"),
            )
        return response

    def check_csrf(self) -> None:
        """Refuse (400) an action whose token is missing, wrong, expired or not made for this browser."""
        token = request.form.get(FIELD) or request.headers.get(HEADER)
        if not self.tokens.valid(token, request.cookies.get(COOKIE)):
            abort(400, description="the form's CSRF token is missing, wrong or expired: reload the page")

    def store_unavailable(self, exc: Exception) -> ResponseReturnValue:
        """A store that does not answer: ``503``, with the page saying so (and nothing of the store's address)."""
        logger.error("inbox: the %s store did not answer: %s", self.receiver.get_store(self.app).name, exc)
        return Response(
            "The event store is not answering right now; try again in a moment.\n", status=503, mimetype="text/plain"
        )

    def _dispatch(self) -> tuple[str | None, float | None]:
        """The receiver's dispatcher's name and deadline on this app, when the receiver tells them."""
        get_config = getattr(self.receiver, "get_config", None)
        if get_config is None:
            return None, None
        try:
            dispatcher = get_config(self.app).dispatcher
        except Exception:  # noqa: BLE001 - the page then says the first answer is not known
            return None, None
        deadline = getattr(dispatcher, "deadline", None)
        return str(dispatcher.name), float(deadline) if isinstance(deadline, (int, float)) else None

    def _context(self, **values: Any) -> dict[str, Any]:
        nonce = g.get("webhook_receiver_inbox_nonce") or ""
        return {
            "ep": self.endpoint,
            "receiver_name": self.receiver.name,
            "csrf_token": self.tokens.token_for(nonce),
            "csrf_field": FIELD,
            "when": when,
            "statuses": _STATUS_ORDER,
            "store": self.receiver.get_store(self.app),
            **values,
        }

    # -- pages ------------------------------------------------------------------

    def index(self) -> ResponseReturnValue:
        """The list of events, newest first, filtered, a page at a time; ``?fragment=rows`` is its table body."""
        filters = Filters.from_args(request.args)
        before_text = request.args.get("before", "")
        before = Cursor.decode(before_text) if before_text else None
        store = self.receiver.get_store(self.app)
        etag = None
        if request.args.get("fragment") == "rows":
            # the live poll: asked before the list is read, so that a change made meanwhile shows next time
            etag = self._rows_etag(store, filters)
            if etag is not None and request.if_none_match.contains(etag):
                unchanged = Response(status=304)
                unchanged.set_etag(etag)
                return unchanged
        page = events_page(store, filters, before=before)
        context = self._context(
            filters=filters,
            page=page,
            rows=[_row(stored) for stored in page.events],
            before=before,
            chart_range=request.args.get("chart", "24h") if request.args.get("chart") in RANGES else "24h",
            now=time.time(),
        )
        if request.args.get("fragment") == "rows":
            rows = Response(render_template("webhook_receiver_inbox/rows.html", **context), mimetype="text/html")
            if etag is not None:
                rows.set_etag(etag)
            return rows
        return render_template("webhook_receiver_inbox/list.html", **context)

    def _rows_etag(self, store: EventStore, filters: Filters) -> str | None:
        """The live rows' tag: the store's change marker, this receiver and the query; ``None`` without a marker.

        A relative time (``since=1h``) moves with the clock, not with the
        store: the times it meant on this poll are part of the tag, so that a
        row it has left out (or let in) since is never kept by a ``304``.
        """
        marker = store.change_marker()
        if marker is None:
            return None
        seed = f"{self.receiver.name}\n{marker}\n{request.query_string.decode('latin-1')}"
        if _relative(filters.since_text) or _relative(filters.until_text):
            seed += f"\n{filters.since!r}\n{filters.until!r}"
        return hashlib.sha256(seed.encode()).hexdigest()[:32]

    def event(self) -> ResponseReturnValue:
        """One event: its body (redacted), its handlers' outcomes, its runs; ``?fragment=summary`` is its live part."""
        event_id = request.args.get("id", "")
        stored = self.receiver.get_store(self.app).get(event_id) if event_id else None
        if stored is None:
            abort(404, description="no stored event with this id")
        store = self.receiver.get_store(self.app)
        dispatch, deadline = self._dispatch()
        context = self._context(
            stored=stored,
            row=_row(stored),
            attempts=attempt_rows(stored, store.deliveries(event_id), dispatch=dispatch, deadline=deadline),
            max_deliveries=MAX_DELIVERIES,
            body=_body_parts(stored),
            attempt=stored.raw.get("attempt") if isinstance(stored.raw, dict) else None,
            resolvable=actions.can_resolve(self.receiver.get_store(self.app)),
            message=_MESSAGES.get(request.args.get("done", "")),
        )
        if request.args.get("fragment") == "summary":
            return render_template("webhook_receiver_inbox/summary.html", **context)
        # upstream is asked for the whole page only, not for each refresh of its summary
        context["upstream"] = read_upstream_logs(self.app, event_id)
        return render_template("webhook_receiver_inbox/event.html", **context)

    def chart(self) -> ResponseReturnValue:
        """Deliveries and failures per hour, as SVG (``?range=24h`` or ``7d``)."""
        name = request.args.get("range", "24h")
        if name not in RANGES:
            abort(400, description=f"range must be one of {', '.join(RANGES)}")
        hours, cut_short = count_hours(self.receiver.get_store(self.app), RANGES[name], time.time())
        svg = render_svg(hours, title=f"Deliveries and failures per hour, last {name}", cut_short=cut_short)
        return Response(svg, mimetype="image/svg+xml")

    def bulk_preview(self) -> ResponseReturnValue:
        """What a bulk replay of the current filter would run, with the button that runs it."""
        filters = Filters.from_args(request.args)
        plan = actions.plan_bulk(self.receiver.get_store(self.app), filters, time.time())
        return render_template(
            "webhook_receiver_inbox/bulk.html", **self._context(filters=plan.filters, plan=plan, result=None)
        )

    # -- actions (POST, CSRF-checked) ---------------------------------------------

    def replay(self) -> ResponseReturnValue:
        """Replay one event (its handlers that did not succeed)."""
        self.check_csrf()
        event_id = request.form.get("event_id", "")
        if not event_id:
            abort(400, description="no event_id")
        result = actions.replay_one(self.app, self.receiver, event_id, who())
        if result.state == "missing":
            abort(404, description="no stored event with this id")
        if _wants_json():
            stored = self.receiver.get_store(self.app).get(event_id)
            return jsonify(
                state=result.state,
                failed=result.failed,
                error=result.error,
                status=stored.status.value if stored else None,
                message=_MESSAGES[result.state],
            )
        return redirect(url_for(f"{self.endpoint}.event", id=event_id, done=result.state), code=303)

    def replay_bulk(self) -> ResponseReturnValue:
        """Replay what the preview showed: the filter's replayable events received before the preview."""
        self.check_csrf()
        filters = Filters.from_args(request.form)
        if filters.until is None:
            abort(400, description="a bulk replay needs the preview's end time ('until'): open the preview again")
        plan = actions.plan_bulk(self.receiver.get_store(self.app), filters, time.time())
        result = actions.replay_bulk(self.app, self.receiver, plan, who())
        if _wants_json():
            return jsonify(counts=result.counts, still_failing=[eid for eid, _ in result.still_failing])
        return render_template(
            "webhook_receiver_inbox/bulk.html", **self._context(filters=plan.filters, plan=plan, result=result)
        )

    def resolve(self) -> ResponseReturnValue:
        """Mark a failed event resolved, when the store can."""
        self.check_csrf()
        event_id = request.form.get("event_id", "")
        done = actions.resolve(self.receiver.get_store(self.app), event_id, who())
        if done is None:
            abort(501, description="this store cannot mark events resolved yet")
        state = "resolved" if done else "not-failed"
        if _wants_json():
            return jsonify(state=state, message=_MESSAGES[state])
        return redirect(url_for(f"{self.endpoint}.event", id=event_id, done=state), code=303)


_MESSAGES = {
    "processed": "Replayed: every handler has now succeeded.",
    "failed": "Replayed: some handler failed again.",
    "duplicate": "Nothing to replay: every handler had already succeeded.",
    "busy": "Not replayed: another worker holds the event right now.",
    "unreadable": "Not replayed: the stored body cannot be rebuilt.",
    "missing": "No stored event with this id.",
    "resolved": "Marked resolved.",
    "not-failed": "Not marked resolved: the event is not failed.",
}


def _relative(text: str) -> bool:
    """Whether a time filter as typed is relative to now (``2h``) rather than a date."""
    return bool(text) and text[-1:].lower() in ("m", "h", "d", "w") and text[:-1].replace(".", "", 1).isdigit()


def _wants_json() -> bool:
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def _row(stored: StoredEvent) -> dict[str, Any]:
    """What the list shows of one event."""
    outcomes = list(stored.handlers.values())
    return {
        "stored": stored,
        "ok": sum(1 for o in outcomes if o.ok and not o.skipped),
        "skipped": sum(1 for o in outcomes if o.skipped),
        "failed": sum(1 for o in outcomes if not o.ok),
        "outcomes": outcomes,
        "finished_at": stored.updated_at if stored.status in _FINISHED else None,
        "transport": transport_of(stored.raw),
    }


def _body_parts(stored: StoredEvent) -> list[tuple[str, str]]:
    """The redacted body, pretty-printed, one part per top-level key (each collapsible on the page).

    The store keeps the body with its secret fields redacted, not the
    passwords of the URLs in it: upstream echoes the integration's URL in
    every delivery, and one that authenticates with basic auth carries its
    password there. Those are hidden here (``user:***@``).
    """
    raw = stored.raw
    if not isinstance(raw, dict):
        return [("body", hide_passwords(json.dumps(raw, indent=2, ensure_ascii=False, default=str)))]
    return [
        (str(key), hide_passwords(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)))
        for key, value in raw.items()
    ]
