"""``flask webhooks consume`` SIGKILLed mid-batch: every event's effect once with a transactional handler, none lost.

The consumers are real processes running the shop (``tests/shop_app.py``: one
row per handler run in a PostgreSQL table without a unique constraint) with
inline dispatch. 500 messages, 100 of them duplicates by id of others, are
published while the consumer is SIGKILLed twice and restarted. A transactional
handler leaves exactly one row per event; one that commits its row itself at
least one (counted). At the end nothing is left on the queue, acknowledged or
not, and nothing went to the dead-letter queue.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from .processes import Processes, logs_text, wait_for
from .queues import AWS_ENV, Rabbit, Sqs, cloudevent, moto_endpoint_fixture, rabbit_fixture  # noqa: F401
from .test_exactly_once import rows_per_event, shop, starts, statuses  # noqa: F401

UNIQUE = 400
DUPLICATES = 100


def stomp_total(rabbit: Rabbit) -> int:
    """Messages on the queue, ready or delivered and not acknowledged (rabbitmqctl counts both)."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name", "messages"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in listed.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == rabbit.name:
            return int(parts[1])
    raise AssertionError(f"queue {rabbit.name} not listed")


class Target:
    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        if kind == "stomp":
            self.rabbit: Rabbit = request.getfixturevalue("rabbit")
            self.url = self.rabbit.url
        else:
            self.sqs = Sqs(request.getfixturevalue("moto_endpoint"), visibility=3, max_receives=50)
            self.url = f"{self.sqs.url}?wait=1"

    def publish(self, bodies: list[bytes]) -> None:
        (self.rabbit if self.kind == "stomp" else self.sqs).publish(bodies)

    def total(self) -> int:
        return stomp_total(self.rabbit) if self.kind == "stomp" else self.sqs.count()

    def dead(self) -> int:
        return self.rabbit.count(self.rabbit.dead) if self.kind == "stomp" else self.sqs.count(self.sqs.dead_url)


@pytest.fixture(params=["stomp", "sqs"])
def target(request: pytest.FixtureRequest) -> Target:
    return Target(request.param, request)


@pytest.fixture
def consumers(shop: Processes, target: Target, tmp_path: Path) -> Iterator[Any]:  # noqa: F811
    shop.env.update(AWS_ENV)
    started: list[subprocess.Popen[bytes]] = []

    def start(n: int) -> subprocess.Popen[bytes]:
        proc = shop.start(
            [sys.executable, "-m", "flask", "--app", "tests.shop_app:app", "webhooks", "consume", target.url],
            tmp_path / f"consumer-{n}.log",
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        shop.stop(proc)


@pytest.mark.parametrize(
    "transactional, competing", [(True, 1), (False, 1), (True, 2)], ids=["transactional", "plain", "two-consumers"]
)
def test_killed_consumers_lose_nothing_and_run_each_effect_once(
    shop: Processes,  # noqa: F811
    target: Target,
    consumers: Any,
    tmp_path: Path,
    table_prefix: str,
    transactional: bool,
    competing: int,
) -> None:
    shop.env["WHR_TRANSACTIONAL"] = "1" if transactional else "0"
    ids = [f"qk-{n}-{uuid.uuid4().hex[:6]}" for n in range(UNIQUE)]
    bodies = [cloudevent(event_id) for event_id in ids] + [cloudevent(random.choice(ids)) for _ in range(DUPLICATES)]
    random.shuffle(bodies)

    running = [consumers(n) for n in range(competing)]

    def publish() -> None:
        for start in range(0, len(bodies), 50):
            target.publish(bodies[start : start + 50])
            time.sleep(0.2)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    for kill, threshold in enumerate((100, 250)):
        wait_for(
            lambda t=threshold: len(starts(tmp_path)) >= t, 180, f"{threshold} handler runs\n{logs_text(tmp_path)}"
        )
        victim = running[kill % len(running)]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        running[kill % len(running)] = consumers(10 + kill)
    publisher.join(120)

    def all_done() -> bool:
        done = statuses(table_prefix)
        return len(done) == UNIQUE and set(done.values()) == {"processed"} and target.total() == 0

    wait_for(all_done, 240, f"every event processed and the queue empty\n{logs_text(tmp_path)}")
    for proc in running:  # SIGTERM: they stop cleanly
        shop.stop(proc)
        assert proc.returncode == 0, logs_text(tmp_path)
    assert target.total() == 0, "a message was left on the queue"
    assert target.dead() == 0

    rows = rows_per_event(table_prefix)
    assert set(rows) == set(ids)
    runs = starts(tmp_path)
    print(f"{target.kind}: {len(runs)} handler runs, {sum(rows.values())} rows for {UNIQUE} events")
    if transactional:
        assert all(count == 1 for count in rows.values()), {k: v for k, v in rows.items() if v != 1}
    else:
        assert all(count >= 1 for count in rows.values())
    assert len(runs) >= UNIQUE
    text = logs_text(tmp_path)
    assert "consumer of" in text and "stopped:" in text
    assert "guest:guest" not in text and AWS_ENV["AWS_SECRET_ACCESS_KEY"] not in text
