"""``async def`` handlers run to their end, as Flask runs async views, or the delivery is not acknowledged.

They go through the app's ``async_to_sync`` (asgiref, Flask's ``async``
extra): inline, in a worker thread, as trigger signal receivers, and when a
plain function returns an awaitable. Without asgiref an ``async def`` handler
is refused at registration, naming the extra, and one that slips through
(a signal receiver, a returned coroutine) fails: never a 2xx for a coroutine
that did not run.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
import warnings
from typing import Any, Callable, Iterator

import pytest
from flask import Flask, current_app

from webhook_receiver import Event, WebhookReceiver, signals
from webhook_receiver.stores import EventStatus
from webhook_receiver.testing import deliver, make_event

from .conftest import SECRET


@pytest.fixture
def threaded(make_app: Callable[..., Flask]) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def factory(**config: Any) -> Flask:
        app = make_app(
            WEBHOOK_RECEIVER_DISPATCH="thread",
            WEBHOOK_RECEIVER_RETRY_BACKOFF=0.01,
            WEBHOOK_RECEIVER_MAX_ATTEMPTS=2,
            **config,
        )
        apps.append(app)
        return app

    yield factory
    for app in apps:
        for config in app.extensions["webhook_receiver"].values():
            config.dispatcher.close()


@pytest.fixture
def no_asgiref(monkeypatch: pytest.MonkeyPatch) -> None:
    """asgiref cannot be imported, as in an install without the extra."""
    monkeypatch.setitem(sys.modules, "asgiref", None)
    monkeypatch.setitem(sys.modules, "asgiref.sync", None)


def wait_status(app: Flask, receiver: WebhookReceiver, event_id: str, status: EventStatus) -> Any:
    store = receiver.get_store(app)
    deadline = time.monotonic() + 10
    while True:
        stored = store.get(event_id)
        if stored is not None and stored.status is status:
            return stored
        assert time.monotonic() < deadline, f"{event_id} is {stored.status if stored else None}, not {status}"
        time.sleep(0.02)


def test_an_async_handler_runs_to_its_end_in_the_request(receiver: WebhookReceiver, app: Flask) -> None:
    ran: list[tuple[str, str, bool]] = []

    @receiver.on("order.paid")
    async def ship(event: Event) -> None:
        await asyncio.sleep(0.01)  # it really awaits: a coroutine left unawaited never gets here
        ran.append(("ship", event.id, current_app._get_current_object() is app))  # type: ignore[attr-defined]

    receiver.on("order.paid", name="after")(lambda event: ran.append(("after", event.id, True)))
    client = app.test_client()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited" is a failure here
        answer = deliver(client, make_event("order.paid", event_id="a-1"), secret=SECRET)
    assert (answer.status_code, answer.get_json()["status"]) == (200, "processed")
    assert ran == [("ship", "a-1", True), ("after", "a-1", True)], "the coroutine ran, in the app's context, in order"
    assert deliver(client, make_event("order.paid", event_id="a-1"), secret=SECRET).get_json()["status"] == "duplicate"
    assert ran == [("ship", "a-1", True), ("after", "a-1", True)]


def test_an_async_handler_runs_in_a_worker_thread(receiver: WebhookReceiver, threaded: Callable[..., Flask]) -> None:
    app = threaded()
    ran: list[str] = []

    @receiver.on("order.paid")
    async def ship(event: Event) -> None:
        await asyncio.sleep(0.01)
        ran.append(event.id)

    assert deliver(app.test_client(), make_event("order.paid", event_id="a-2"), secret=SECRET).status_code == 202
    stored = wait_status(app, receiver, "a-2", EventStatus.PROCESSED)
    assert ran == ["a-2"]
    assert stored.handlers[f"{__name__}.{ship.__qualname__}"].attempts == 1


def test_an_async_handler_that_raises_is_a_failure_like_any_other(receiver: WebhookReceiver, app: Flask) -> None:
    @receiver.on("order.paid", name="charge")
    async def charge(event: Event) -> None:
        await asyncio.sleep(0)
        raise ValueError("card declined")

    after: list[str] = []
    receiver.on("order.paid", name="after")(lambda event: after.append(event.id))
    failures: list[tuple[str, str]] = []
    with signals.handler_failed.connected_to(
        lambda sender, **kw: failures.append((kw["handler"], repr(kw["exception"]))), app
    ):
        answer = deliver(app.test_client(), make_event("order.paid", event_id="a-3"), secret=SECRET)
    assert (answer.status_code, answer.get_json()["status"]) == (500, "failed")
    assert failures == [("charge", "ValueError('card declined')")]
    assert after == ["a-3"], "the others still run"
    stored = receiver.get_store(app).get("a-3")
    assert stored is not None and stored.status is EventStatus.FAILED
    assert not stored.handlers["charge"].ok and stored.handlers["charge"].error == "ValueError: card declined"


def test_an_async_handler_that_raises_in_a_worker_is_retried_then_failed(
    receiver: WebhookReceiver, threaded: Callable[..., Flask]
) -> None:
    app = threaded()
    runs: list[str] = []

    @receiver.on("order.paid", name="charge")
    async def charge(event: Event) -> None:
        runs.append(event.id)
        raise ValueError("card declined")

    assert deliver(app.test_client(), make_event("order.paid", event_id="a-4"), secret=SECRET).status_code == 202
    stored = wait_status(app, receiver, "a-4", EventStatus.FAILED)
    assert runs == ["a-4", "a-4"], "two runs, as MAX_ATTEMPTS says"
    outcome = stored.handlers["charge"]
    assert not outcome.ok and outcome.attempts == 2 and outcome.error == "ValueError: card declined"


def test_async_signal_receivers_and_returned_awaitables_run(receiver: WebhookReceiver, app: Flask) -> None:
    ran: list[str] = []

    async def notify(sender: Flask, event: Event) -> None:
        await asyncio.sleep(0)
        ran.append(f"signal {event.id} {sender is app}")

    async def audit(event: Event, where: str) -> None:
        await asyncio.sleep(0)
        ran.append(f"{where} {event.id}")

    class Webhook:
        async def __call__(self, event: Event) -> None:
            await asyncio.sleep(0)
            ran.append(f"callable {event.id}")

    receiver.on("order.paid", name="hidden")(lambda event: audit(event, "returned"))  # a plain def returning one
    receiver.on("order.paid", name="partial")(functools.partial(audit, where="partial"))
    receiver.on("order.paid", name="object")(Webhook())
    receiver.signal("order.paid").connect(notify, weak=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        answer = deliver(app.test_client(), make_event("order.paid", event_id="a-5"), secret=SECRET)
    assert (answer.status_code, answer.get_json()["status"]) == (200, "processed")
    assert ran == ["returned a-5", "partial a-5", "callable a-5", "signal a-5 True"]


def test_without_asgiref_an_async_handler_is_refused_at_registration(
    receiver: WebhookReceiver, no_asgiref: None
) -> None:
    async def ship(event: Event) -> None: ...

    with pytest.raises(TypeError, match=r"ship is a coroutine function.*webhook_receiver\[async\].*plain def"):
        receiver.on("order.paid")(ship)
    with pytest.raises(TypeError, match=r"webhook_receiver\[async\]"):
        receiver.on("order.paid", name="partial")(functools.partial(ship))
    assert receiver.handlers == []
    receiver.on("order.paid")(lambda event: None)  # plain handlers need nothing


def test_without_asgiref_a_coroutine_that_slips_through_fails_the_delivery(
    receiver: WebhookReceiver, app: Flask, no_asgiref: None
) -> None:
    ran: list[str] = []

    async def notify(sender: Flask, event: Event) -> None:
        ran.append("signal")

    async def later(event: Event) -> None:
        ran.append("returned")

    receiver.on("order.paid", name="hidden")(lambda event: later(event))
    receiver.signal("order.paid").connect(notify, weak=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the coroutine made is closed, not left unawaited
        answer = deliver(app.test_client(), make_event("order.paid", event_id="a-6"), secret=SECRET)
    assert (answer.status_code, answer.get_json()["status"]) == (500, "failed"), "no 2xx for what did not run"
    assert ran == []
    stored = receiver.get_store(app).get("a-6")
    assert stored is not None
    errors = {name: outcome.error for name, outcome in stored.handlers.items()}
    assert "returned an awaitable" in (errors["hidden"] or "") and "webhook_receiver[async]" in (errors["hidden"] or "")
    signal_error = errors[f"{__name__}.{notify.__qualname__}"] or ""
    assert "is a coroutine function" in signal_error and "webhook_receiver[async]" in signal_error
