"""Review 17b: a fork while another thread of the parent is inside a SQLite write.

``gunicorn --preload`` forks a new worker whenever one dies or is recycled,
while the master's own dispatch threads are writing to the store. SQLite
keeps a process's locks and connections' state in the process's memory,
which the child inherits mid-write: without a guard, about one child in ten
forked that way hung or found the file "locked" for its whole busy timeout
while the parent kept writing.
"""

from __future__ import annotations

import threading
from pathlib import Path

from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing.store_contract import contract_event

from .processes import in_child

#: How long a child is given before the test calls it hung (it needs well under a second).
_HUNG_AFTER = 20.0
_FORKS = 40


def _child_exit_code(store: SQLiteStore, event_id: str) -> int:
    def claim_and_finish() -> bool:
        return store.finish(store.claim(contract_event(event_id)), ok=True)

    return in_child(claim_and_finish, hung_after=_HUNG_AFTER)


def test_sqlite_children_forked_while_a_parent_thread_writes_can_write(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "events.sqlite3"), timeout=3.0)
    store.get("warm-up")
    stop = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        n = 0
        try:
            while not stop.is_set():
                claim = store.claim(contract_event(f"parent-{n}"))
                store.finish(claim, ok=True)
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        codes = [_child_exit_code(store, f"child-{n}") for n in range(_FORKS)]
    finally:
        stop.set()
        writer.join(30)
    assert failures == []
    assert codes == [0] * _FORKS, f"{codes.count(-9)} children hung, {_FORKS - codes.count(0) - codes.count(-9)} failed"
    for n in range(_FORKS):
        stored = store.get(f"child-{n}")
        assert stored is not None and stored.status.value == "processed"
