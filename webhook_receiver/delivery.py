"""The HTTP side of a delivery: from the raw request to the answer upstream acts on.

The steps, in order, each with its own answer (docs/http.rst, the HTTP contract):

1. ``POST`` only (405);
2. the declared length against the limit (413), before anything is read;
3. the secret header, in constant time, before the body is parsed (401);
4. the trigger header (400), the body read up to the limit (413) and parsed
   (400);
5. the dispatcher takes the event (503 when the store or the task queue
   cannot, or too many events wait for a worker): inline, the store claims it (200 ``duplicate`` when it is done;
   409 ``in_progress`` while another worker holds it) and the handlers run
   (200 ``processed`` or 500 ``failed``); in the background, the event is made
   durable and 202 ``accepted`` is answered at once.

Every answer is JSON and none holds a traceback, the secret or the body. One
INFO line is logged per delivery.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Request, Response, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wsgi import get_content_length, get_input_stream

from . import fastjson, instrumentation, signals
from .catalogue import is_event_name
from .config import ReceiverConfig
from .errors import (
    BacklogFull,
    BrokerUnavailable,
    InvalidEvent,
    PayloadTooLarge,
    StoreUnavailable,
)
from .events import Event
from .handlers import HandlerSource
from .intake import hand_over
from .untrusted import logger
from .wire import SECRET_HEADER, TRIGGER_HEADER

__all__ = ["SECRET_HEADER", "TRIGGER_HEADER", "receive"]

_READ_CHUNK = 64 * 1024


class _Answer:
    """An answer and what to log about it."""

    __slots__ = ("code", "body", "status", "event", "headers")

    def __init__(
        self,
        code: int,
        body: dict[str, Any],
        *,
        status: str,
        event: Event | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.body = body
        self.status = status
        self.event = event
        self.headers = headers


def _error(code: int, status: str, message: str, **headers: str) -> _Answer:
    return _Answer(code, {"error": message}, status=status, headers=headers or None)


def _done(code: int, status: str, event: Event) -> _Answer:
    return _Answer(code, {"id": event.id, "status": status}, status=status, event=event)


def receive(receiver: HandlerSource, app: Flask, config: ReceiverConfig) -> Response:
    """Answer the current request as a webhook delivery.

    :param receiver: the receiver the endpoint belongs to.
    :param app: the current app (the signals' sender).
    :param config: the receiver's configuration on *app*.
    """
    started = time.perf_counter()
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    try:
        answer = _answer(req.environ, receiver, app, config)
    except Exception:  # the last resort: still JSON, never a traceback; upstream retries
        logger.exception("unexpected error while answering a delivery")
        answer = _error(500, "error", "an unexpected error occurred; it is logged")
    response = app.response_class(
        fastjson.dumps_bytes(answer.body),
        status=answer.code,
        mimetype="application/json",
        headers=answer.headers,
    )
    instrumentation.answered(
        app, receiver.name, answer.status, answer.code, answer.event, req.environ.get(_TRIGGER_KEY), started
    )
    if logger.isEnabledFor(logging.INFO):
        event = answer.event
        trigger = event.trigger if event else req.environ.get(_TRIGGER_KEY, "")
        logger.info(
            "delivery id=%s trigger=%s attempt=%s status=%s http=%d ms=%.1f",
            event.id if event else "-",
            trigger if is_event_name(trigger) else "-",
            event.attempt if event else "-",
            answer.status,
            answer.code,
            (time.perf_counter() - started) * 1000.0,
        )
    return response


#: The WSGI environ keys of the two headers, read once per request straight from the environ.
_SECRET_KEY = "HTTP_" + SECRET_HEADER.upper().replace("-", "_")
_TRIGGER_KEY = "HTTP_" + TRIGGER_HEADER.upper().replace("-", "_")


def _answer(environ: dict[str, Any], receiver: HandlerSource, app: Flask, config: ReceiverConfig) -> _Answer:
    method = environ.get("REQUEST_METHOD", "GET")
    if method != "POST":
        return _error(
            405,
            "method_not_allowed",
            f"{method} is not allowed: Moltin delivers webhooks with POST",
            Allow="POST",
        )
    limit = config.max_content_length
    declared = get_content_length(environ)
    if declared is not None and declared > limit:
        return _too_large(limit)

    if config.verifier is not None:
        presented = environ.get(_SECRET_KEY)
        if not config.verifier.verify(presented):
            signals.send_isolated(
                signals.verification_failed,
                app,
                reason="missing" if presented is None else "mismatch",
                receiver=receiver,
            )
            return _error(401, "unauthorized", f"the {SECRET_HEADER} header is missing or wrong")

    trigger = environ.get(_TRIGGER_KEY)
    if not trigger:
        return _error(400, "bad_request", f"the {TRIGGER_HEADER} header is missing")
    if not is_event_name(trigger):
        return _error(400, "bad_request", f"the {TRIGGER_HEADER} header is not an event name")

    try:
        event = Event.from_json(_read_body(environ, declared, limit), trigger=trigger)
    except PayloadTooLarge:
        return _too_large(limit)
    except InvalidEvent as exc:
        return _error(400, "bad_request", exc.reason)

    try:
        outcome = hand_over(event, receiver, app, config.dispatcher)
    except (StoreUnavailable, BrokerUnavailable, BacklogFull) as exc:
        logger.error("event %s not acknowledged: %s", event.id, exc)
        if isinstance(exc, BacklogFull):
            error = "the backlog is full"
        else:
            error = f"the {'event store' if isinstance(exc, StoreUnavailable) else 'task queue'} is unavailable"
        return _Answer(
            503, {"id": event.id, "status": "unavailable", "error": error}, status="unavailable", event=event
        )
    return _done(outcome.code, outcome.status, event)


def _too_large(limit: int) -> _Answer:
    return _error(413, "too_large", f"the body is larger than the limit of {limit} bytes")


def _read_body(environ: dict[str, Any], declared: int | None, limit: int) -> bytes:
    """Read the body, refusing to hold more than *limit* bytes of it.

    :param declared: the Content-Length, already checked against *limit*, or ``None``.
    :raises PayloadTooLarge: if the body is longer than *limit*.
    :raises InvalidEvent: if the client went away mid-body.
    """
    if declared is not None:  # the usual case: one read of the declared length, no more
        chunk: bytes = environ["wsgi.input"].read(declared)
        if len(chunk) != declared:
            raise InvalidEvent("the body ended before its declared length")
        return chunk
    chunks: list[bytes] = []
    size = 0
    try:
        # The WSGI input (chunked, or ended by the server), with our limit rather than the app-wide
        # MAX_CONTENT_LENGTH.
        stream = get_input_stream(environ, max_content_length=limit)
        while True:
            chunk = stream.read(min(_READ_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(limit)
    except RequestEntityTooLarge:
        raise PayloadTooLarge(limit) from None
    except ClientDisconnected:
        raise InvalidEvent("the body ended before its declared length") from None
    return b"".join(chunks)
