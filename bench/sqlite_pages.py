"""Pages the SQLite store writes to its WAL per inline delivery: an index's cost, counted rather than timed.

A store holding ``--stored`` events (20,000 by default) takes ``--deliveries``
more, each a ``claim`` then a ``finish`` of a new event with the benchmark's
``order.paid`` body, with automatic checkpoints off; the WAL's growth divided
by the page size (plus each frame's header) is the pages written. Unlike a
timing, the count does not move with the machine's other work.

Run it from the repository root (or from a checkout of another version, to compare)::

    python bench/sqlite_pages.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webhook_receiver.events import Event  # noqa: E402
from webhook_receiver.stores.sqlite import SQLiteStore  # noqa: E402
from webhook_receiver.testing import make_event  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stored", type=int, default=20_000)
    parser.add_argument("--deliveries", type=int, default=3000)
    args = parser.parse_args()
    path = os.path.join(tempfile.mkdtemp(prefix="bench-pages-"), "events.sqlite3")
    store = SQLiteStore(path)
    conn = store._connection()
    conn.execute("PRAGMA wal_autocheckpoint=0")
    page = conn.execute("PRAGMA page_size").fetchone()[0]

    def deliver(count: int) -> float:
        events = [Event.from_dict(make_event("order.paid", event_id=uuid.uuid4().hex)) for _ in range(count)]
        started = time.process_time()
        for event in events:
            store.finish(store.claim(event), ok=True)
        return (time.process_time() - started) / count * 1e6

    deliver(args.stored)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cpu = deliver(args.deliveries)
    frames = os.path.getsize(path + "-wal") / (page + 24)
    print(
        f"{ROOT.name}: {frames / args.deliveries:.2f} WAL pages per delivery (claim + finish) with"
        f" {args.stored:,} events stored; {cpu:.0f} us CPU each"
    )


if __name__ == "__main__":
    main()
