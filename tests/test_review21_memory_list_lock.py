"""Review of issue 21: the memory store's listing decodes no body while it holds the lock every delivery takes.

The inbox reads the list on every live poll (the memory store has no change
marker), in batches of up to 20,000 events when a filter is applied here;
each body decoded under the store's lock pauses every delivery of the
process for as long. A profile hook records, at each call of ``load_raw``
(the body's decoding), whether the store's lock is held.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

from webhook_receiver.events import Event
from webhook_receiver.stores.memory import MemoryStore
from webhook_receiver.testing import make_event


def test_events_decode_the_bodies_after_letting_the_lock_go() -> None:
    store = MemoryStore()
    for n in range(20):
        store.claim(Event.from_dict(make_event("order.paid", {"type": "order", "id": str(n)}, event_id=f"e-{n}")))
    held: list[bool] = []

    def watch(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name == "load_raw":
            held.append(store._lock.locked())

    sys.setprofile(watch)
    try:
        listed = store.events(limit=100)
    finally:
        sys.setprofile(None)
    assert len(listed) == 20 and {e.raw["id"] for e in listed} == {f"e-{n}" for n in range(20)}
    assert held and not any(held), f"{sum(held)} of {len(held)} bodies decoded under the store's lock"
