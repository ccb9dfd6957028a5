"""A store of its own for each test, whatever the app's configuration."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Iterator

from flask import Flask

from ..dispatch.queue import QueueDispatcher
from ..receiver import EXTENSION_KEY, RECEIVERS_KEY, WebhookReceiver
from ..stores.base import EventStore
from ..stores.memory import MemoryStore

__all__ = ["own_stores"]


@contextlib.contextmanager
def own_stores(app: Flask) -> Iterator[dict[str, EventStore]]:
    """Give each receiver of *app* a fresh memory store until the block ends, then put its own store back.

    The ``webhook_client`` fixture runs each test in one, so that tests share
    no event with each other nor with the store the app is configured with
    (the SQLite file of an app without ``TESTING``, a Redis server ...): a
    test with a fixed event id passes every time.

    A receiver is left with its own store, with a warning, when a memory store
    cannot stand in for it: handlers registered ``transactional=True`` need
    the store's database, and background dispatch has worker threads already
    taking events from the configured store.

    :returns: the stand-in stores, by receiver name.
    """
    configs = app.extensions.get(EXTENSION_KEY, {})
    receivers: dict[str, WebhookReceiver] = app.extensions.get(RECEIVERS_KEY, {})
    saved = dict(configs)
    stand_ins: dict[str, EventStore] = {}
    for name, config in saved.items():
        receiver = receivers.get(name)
        if receiver is None:
            continue
        reason = None
        if any(handler.transactional for handler in receiver.handlers):
            reason = "its transactional handlers need the store's database"
        elif isinstance(config.dispatcher, QueueDispatcher):
            reason = f"its {config.dispatcher.name or 'background'} workers already take events from it"
        if reason:
            warnings.warn(
                f"webhook_client: receiver {name!r} keeps its {config.store.name} store ({reason}), so tests"
                " share its events; give the test app WEBHOOK_RECEIVER_STORE = 'memory://' (or TESTING = True),"
                " or override the webhook_isolated_store fixture to return False to say this is meant",
                UserWarning,
                stacklevel=3,
            )
            continue
        store = MemoryStore(lease_seconds=config.store.lease_seconds).for_receiver(name)
        store.bind(app)
        config.dispatcher.bind(app, receiver, store)
        configs[name] = dataclasses.replace(config, store=store)
        stand_ins[name] = store
    try:
        yield stand_ins
    finally:
        for name in stand_ins:
            config = saved[name]
            config.dispatcher.bind(app, receivers[name], config.store)
            current = configs.get(name)
            # Keep what the test changed besides the store (a session secret, say).
            configs[name] = dataclasses.replace(current, store=config.store) if current is not None else config
