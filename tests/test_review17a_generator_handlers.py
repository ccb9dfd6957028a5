"""Review of issue 17 (item 10's promise): no 2xx for a handler whose body did not run.

A handler with a ``yield`` (sync, or ``async def``) makes a generator when called: before the fix it
was accepted, answered 200 ``processed``, its body never ran, and redeliveries said ``duplicate``.
"""

from __future__ import annotations

import functools
from typing import Any, AsyncIterator, Iterator

import pytest

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores import EventStatus
from webhook_receiver.testing import deliver, make_event

from .conftest import SECRET, new_app


def _generator(event: Event) -> Iterator[None]:
    yield


async def _async_generator(event: Event) -> AsyncIterator[None]:
    yield


class _Callable:
    def __call__(self, event: Event) -> Iterator[None]:
        yield


@pytest.mark.parametrize(
    "fn",
    [_generator, _async_generator, functools.partial(_async_generator), _Callable()],
    ids=["generator", "async-generator", "partial", "callable-object"],
)
def test_a_generator_function_is_refused_at_registration(fn: Any) -> None:
    with pytest.raises(TypeError, match="generator function"):
        WebhookReceiver().on("order.paid")(fn)


@pytest.mark.parametrize("inner", [_generator, _async_generator], ids=["generator", "async-generator"])
def test_a_generator_behind_a_decorator_fails_the_event_instead_of_a_2xx(inner: Any) -> None:
    receiver = WebhookReceiver()
    receiver.on("order.paid", name="hidden")(lambda event: inner(event))  # the decorator hides the yield
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)
    body = make_event("order.paid", event_id="ev-gen")
    response = deliver(app.test_client(), body, secret=SECRET)
    assert not 200 <= response.status_code < 300
    stored = receiver.get_store(app).get("ev-gen")
    assert stored is not None and stored.status is EventStatus.FAILED
    assert "generator function" in (stored.handlers["hidden"].error or "")


def test_a_generator_connected_to_a_trigger_signal_fails_the_event() -> None:
    receiver = WebhookReceiver()
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)

    def on_paid(sender: Any, event: Event) -> Iterator[None]:
        yield

    receiver.signal("order.paid").connect(on_paid)
    response = deliver(app.test_client(), make_event("order.paid", event_id="ev-sig"), secret=SECRET)
    assert not 200 <= response.status_code < 300
    stored = receiver.get_store(app).get("ev-sig")
    assert stored is not None and stored.status is EventStatus.FAILED
