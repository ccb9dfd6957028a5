"""A pytest plugin (loaded automatically once ``webhook_receiver`` is installed).

Fixtures:

``webhook_event``
    :func:`~webhook_receiver.testing.make_event`, to build delivery bodies.
``webhook_client``
    A :class:`~webhook_receiver.testing.WebhookClient` delivering to your
    ``app`` fixture with the receiver's own secret:
    ``webhook_client.send("order.paid")`` or ``webhook_client.send(body)``.
    Each test gets a memory store of its own, whatever the app's
    configuration (:func:`~webhook_receiver.testing.own_stores`).
``webhook_isolated_store``
    ``True``: override it in your ``conftest.py`` to return ``False``, and
    ``webhook_client`` leaves the app's own store in place.
``moltin_emulator``
    A running :class:`~webhook_receiver.local.emulator.Emulator` on a free
    port, retrying deliveries quickly; stopped after the test.

The plugin imports nothing of the library until a test asks for one of its
fixtures, so a test run that uses none of them does not pay for Flask apps,
the emulator or the stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

if TYPE_CHECKING:
    from flask import Flask

    from ..testing import WebhookClient
    from .emulator import Emulator


@pytest.fixture
def webhook_event() -> Callable[..., dict[str, Any]]:
    """:func:`~webhook_receiver.testing.make_event`."""
    from ..wire import make_event

    return make_event


@pytest.fixture
def webhook_isolated_store() -> bool:
    """Whether ``webhook_client`` gives each test a memory store of its own; override it to return ``False``."""
    return True


@pytest.fixture
def webhook_client(app: Flask, webhook_isolated_store: bool) -> Iterator[WebhookClient]:
    """Signed deliveries to the ``app`` fixture's receiver, into a store of the test's own (see above)."""
    from ..testing import WebhookClient, own_stores

    if not webhook_isolated_store:
        yield WebhookClient(app)
        return
    with own_stores(app):
        yield WebhookClient(app)


@pytest.fixture
def moltin_emulator() -> Iterator[Emulator]:
    """A local Moltin on a free port of 127.0.0.1, retrying deliveries after 0.1, 0.2 and 0.4 s."""
    from .emulator import Emulator

    with Emulator(retry_delays=(0.1, 0.2, 0.4)) as emulator:
        yield emulator
