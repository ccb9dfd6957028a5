"""The observer hooks: a failing observer never changes an answer or a handler's outcome."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from webhook_receiver import Event, WebhookReceiver, instrumentation
from webhook_receiver.testing import deliver, make_event

from .conftest import SECRET, new_app


class Broken:
    """Fails everywhere it can: making, entering and leaving its context managers, and the plain calls."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.seen: list[str] = []

    def answered(self, receiver: str, status: str, code: int, event: Any, trigger: Any, seconds: float) -> None:
        self.seen.append(f"answered {status} {code}")
        raise RuntimeError("observer broken")

    @contextlib.contextmanager
    def _around(self, what: str) -> Iterator[None]:
        if self.where == "enter":
            raise RuntimeError("observer broken")
        try:
            yield
        finally:
            self.seen.append(what)
            if self.where == "exit":
                raise RuntimeError("observer broken")

    def running(self, receiver: str, event: Event, claim: Any) -> Any:
        return self._around("run")

    def handler(self, receiver: str, event: Event, handler: str) -> Any:
        if self.where == "make":
            raise RuntimeError("observer broken")
        return self._around(f"handler {handler}")

    def before_accept(self, event: Event) -> Event:
        raise RuntimeError("observer broken")


def test_a_failing_observer_changes_no_answer_and_no_outcome(receiver: WebhookReceiver) -> None:
    @receiver.on("order.paid", name="ship")
    def ship(event: Event) -> None:
        if event.id.startswith("fail-"):
            raise LookupError("no")

    for where in ("make", "enter", "exit"):
        app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_TRACING=False)
        receiver.init_app(app)
        broken = Broken(where)
        instrumentation.add_observer(app, broken)
        client = app.test_client()
        assert deliver(client, make_event("order.paid", event_id="ok-1"), secret=SECRET).status_code == 200
        assert deliver(client, make_event("order.paid", event_id="fail-1"), secret=SECRET).status_code == 500
        assert receiver.get_store(app).get("ok-1").handlers["ship"].ok  # type: ignore[union-attr]
        assert not receiver.get_store(app).get("fail-1").handlers["ship"].ok  # type: ignore[union-attr]
        assert "answered processed 200" in broken.seen and "answered failed 500" in broken.seen
        if where == "exit":  # it was entered, so it was left, with the handler's failure
            assert broken.seen.count("handler ship") == 2 and broken.seen.count("run") == 2


def test_without_observers_the_handlers_are_the_registered_ones(receiver: WebhookReceiver) -> None:
    receiver.on("order.paid", name="ship")(lambda event: None)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_TRACING=False)
    receiver.init_app(app)
    handlers = receiver.handlers_for("order.paid", app)
    assert instrumentation.observed_handlers(app, "moltin", handlers) is handlers
    assert instrumentation.running(app, "moltin", Event(id="x", trigger="order.paid"), None).__enter__() is None


def test_a_failing_observer_before_accept_still_stores_the_event_as_sent(receiver: WebhookReceiver) -> None:
    import threading

    done = threading.Event()
    receiver.on("order.paid", name="ship")(lambda event: done.set())
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_TRACING=False, WEBHOOK_RECEIVER_DISPATCH="thread"
    )
    receiver.init_app(app)
    instrumentation.add_observer(app, Broken("exit"))
    try:
        answer = deliver(app.test_client(), make_event("order.paid", event_id="bg-1"), secret=SECRET)
        assert answer.status_code == 202
        assert done.wait(10)
        stored = receiver.get_store(app).get("bg-1")
        assert stored is not None and stored.raw["id"] == "bg-1"
    finally:
        receiver.get_config(app).dispatcher.close()


class Switched:
    """Watches runs only while :attr:`on` is set (as tracing does once a provider is set)."""

    def __init__(self) -> None:
        self.on = False
        self.seen: list[str] = []

    def watching(self) -> bool:
        return self.on

    def answered(self, *args: Any, **kwargs: Any) -> None:
        self.seen.append("answered")

    @contextlib.contextmanager
    def _around(self, what: str) -> Iterator[None]:
        yield
        self.seen.append(what)

    def running(self, receiver: str, event: Event, claim: Any) -> Any:
        return self._around("run")

    def handler(self, receiver: str, event: Event, handler: str) -> Any:
        return self._around(f"handler {handler}")

    def before_accept(self, event: Event) -> Event:
        return event


def test_an_observer_that_starts_watching_later_sees_the_runs_from_then_on(receiver: WebhookReceiver) -> None:
    receiver.on("order.paid", name="ship")(lambda event: None)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_TRACING=False)
    receiver.init_app(app)
    switched = Switched()
    instrumentation.add_observer(app, switched)
    client = app.test_client()
    assert deliver(client, make_event("order.paid", event_id="before"), secret=SECRET).status_code == 200
    assert switched.seen == ["answered"]  # answers are always heard; runs only while watching
    switched.on = True
    assert deliver(client, make_event("order.paid", event_id="after"), secret=SECRET).status_code == 200
    assert switched.seen == ["answered", "handler ship", "run", "answered"]
    switched.on = False
    assert deliver(client, make_event("order.paid", event_id="later"), secret=SECRET).status_code == 200
    assert switched.seen[4:] == ["answered"]
