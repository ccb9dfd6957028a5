"""Faults with real processes: gunicorn workers, a worker killed mid-handler, a store going down,
handlers slower than upstream's timeout, and a real Celery worker.

Redis is the one at 127.0.0.1:6379 (database 14 and 15), or a redis-server of
the test's own when the test stops it. With CI=true an unreachable Redis is a
failure, not a skip.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from webhook_receiver.local.emulator import Emulator
from webhook_receiver.testing import deliver, make_event
from webhook_receiver.upstream.client import MoltinClient

from .conftest import REDIS_URL, require_redis
from .processes import Processes, free_port, logs_text, wait_for
from .service_app import SECRET, read_output

BROKER_URL = REDIS_URL.rsplit("/", 1)[0] + "/14"


def effects(tmp_path: Path, event_id: str, phase: str = "done") -> list[dict[str, Any]]:
    return [
        line
        for line in read_output(str(tmp_path / "effects.jsonl"))
        if line["id"] == event_id and line["phase"] == phase
    ]


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_identical_deliveries_at_the_same_moment_run_once(
    processes: Processes, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    if store == "redis":
        processes.env.update(WHR_STORE=REDIS_URL, WHR_PREFIX=request.getfixturevalue("redis_prefix"))
    processes.env["WHR_SLEEP"] = "1"
    url = processes.gunicorn(tmp_path / "gunicorn.log", workers=2)
    body = make_event("order.paid", event_id=f"twin-{uuid.uuid4().hex[:8]}")
    answers: list[requests.Response] = []
    barrier = threading.Barrier(2)

    def send() -> None:
        barrier.wait()
        answers.append(deliver(url, body, secret=SECRET))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    statuses = sorted((a.status_code, a.json()["status"]) for a in answers)
    assert statuses in ([(200, "processed"), (409, "in_progress")], [(200, "duplicate"), (200, "processed")])
    assert deliver(url, body, secret=SECRET).json()["status"] == "duplicate"
    assert len(effects(tmp_path, body["id"])) == 1
    assert len(effects(tmp_path, body["id"], "start")) == 1


def test_worker_killed_mid_handler_is_finished_by_a_redelivery(processes: Processes, tmp_path: Path) -> None:
    processes.env.update(WHR_SLEEP="2", WHR_LEASE="3")
    url = processes.gunicorn(tmp_path / "gunicorn.log", workers=2)
    with Emulator(retry_delays=(1, 1, 2, 2, 2), timeout=10) as moltin:
        client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url)
        client.create_integration(name="shop", url=url, secret_key=SECRET, observes=["order.paid"])
        fired = moltin.fire("order.paid")
        wait_for(lambda: effects(tmp_path, fired.event_id, "start"), 20, "the handler to start")
        victim = effects(tmp_path, fired.event_id, "start")[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        assert moltin.wait_idle(40)
        logs = moltin.logs()
    assert len(effects(tmp_path, fired.event_id)) == 1, "the effect happened once"
    starts = effects(tmp_path, fired.event_id, "start")
    assert len(starts) == 2 and starts[1]["pid"] != victim, "the handler ran at most twice"
    outcomes = [(log["attempt"], log["succeeded"], log["status_code"]) for log in logs]
    assert outcomes[0] == (1, False, None), "the first delivery lost its worker"
    assert outcomes[-1][1:] == (True, 200)
    assert all(code in (None, 409) for _, ok, code in outcomes[:-1]), "in between: in progress"


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_store_down_answers_503_and_the_retry_after_it_is_back_succeeds(
    processes: Processes, tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    if store == "redis":
        require_redis()
        port = free_port()
        processes.env.update(WHR_STORE=f"redis://127.0.0.1:{port}/0", WHR_PREFIX="down-test")
        redis_proc = processes.redis_server(port, tmp_path / "redis.log")
        processes.stop(redis_proc)

        def bring_back() -> None:
            processes.redis_server(port, tmp_path / "redis.log")
    else:
        folder = tmp_path / "volume"
        processes.env["WHR_STORE"] = f"sqlite:///{folder}/events.sqlite3"

        def bring_back() -> None:
            folder.mkdir()

    url = processes.gunicorn(tmp_path / "gunicorn.log", workers=2)
    with Emulator(retry_delays=(0.5, 1, 1, 2, 2, 2), timeout=10) as moltin:
        client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url)
        client.create_integration(name="shop", url=url, secret_key=SECRET, observes=["order.paid"])
        fired = moltin.fire("order.paid")
        wait_for(lambda: any(log["status_code"] == 503 for log in moltin.logs()), 20, "a 503")
        assert effects(tmp_path, fired.event_id, "start") == [], "nothing ran while the store was down"
        bring_back()
        assert moltin.wait_idle(40)
        logs = moltin.logs()
    codes = [log["status_code"] for log in logs]
    assert codes[0] == 503 and codes[-1] == 200 and set(codes[:-1]) == {503}
    assert json.loads(logs[-1]["body"]) == {"id": fired.event_id, "status": "processed"}
    assert len(effects(tmp_path, fired.event_id)) == 1


@pytest.mark.parametrize("dispatch", ["thread", "celery"])
def test_handler_slower_than_upstreams_timeout_is_acknowledged_first_and_handled_once(
    processes: Processes, tmp_path: Path, dispatch: str, request: pytest.FixtureRequest
) -> None:
    processes.env.update(WHR_DISPATCH=dispatch, WHR_SLEEP="15")
    if dispatch == "celery":
        prefix = request.getfixturevalue("redis_prefix")
        processes.env.update(WHR_STORE=REDIS_URL, WHR_PREFIX=prefix, WHR_BROKER=BROKER_URL, WHR_QUEUE=prefix)
        processes.celery_worker(tmp_path / "celery.log", prefix)
    url = processes.gunicorn(tmp_path / "gunicorn.log", workers=2)
    body = make_event("order.paid", event_id=f"slow-{uuid.uuid4().hex[:8]}")
    answer = deliver(url, body, secret=SECRET, timeout=10)
    assert answer.status_code == 202 and answer.json() == {"id": body["id"], "status": "accepted"}
    assert effects(tmp_path, body["id"]) == [], "answered before the handler finished"
    again = deliver(url, dict(body, attempt=2), secret=SECRET, timeout=10)
    assert again.status_code == 202
    wait_for(lambda: effects(tmp_path, body["id"]), 40, f"the handler to finish\n{logs_text(tmp_path)}")
    assert len(effects(tmp_path, body["id"], "start")) == 1
    assert deliver(url, body, secret=SECRET).json()["status"] == "duplicate"


def test_celery_retries_a_failing_handler(processes: Processes, tmp_path: Path, redis_prefix: str) -> None:
    processes.env.update(
        WHR_DISPATCH="celery",
        WHR_FAIL_ONCE="1",
        WHR_STORE=REDIS_URL,
        WHR_PREFIX=redis_prefix,
        WHR_BROKER=BROKER_URL,
        WHR_QUEUE=redis_prefix,
    )
    processes.celery_worker(tmp_path / "celery.log", redis_prefix)
    url = processes.gunicorn(tmp_path / "gunicorn.log", workers=1)
    body = make_event("product.deleted", event_id=f"retry-{uuid.uuid4().hex[:8]}")
    assert deliver(url, body, secret=SECRET).status_code == 202
    wait_for(lambda: effects(tmp_path, body["id"]), 40, f"the retry to succeed\n{logs_text(tmp_path)}")
    assert len(effects(tmp_path, body["id"], "start")) == 2
    assert "due again in" in (tmp_path / "celery.log").read_text()


def test_a_redis_server_refusing_the_claim_leaves_the_connection_in_step(processes: Processes, tmp_path: Path) -> None:
    # A server out of memory refuses every queued command of the claim's MULTI and its EXEC:
    # the store must read all four replies, or the next command on this thread's connection
    # takes a stale one for its answer.
    import redis

    from webhook_receiver.errors import StoreUnavailable
    from webhook_receiver.stores import ClaimState
    from webhook_receiver.stores.redis import RedisStore

    port = free_port()
    processes.redis_server(port, tmp_path / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"
    admin = redis.Redis.from_url(url)
    store = RedisStore(url, prefix="whr-oom")
    assert store.claim(make_event_object("warm")).state is ClaimState.CLAIMED  # the prefix is taken
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    with pytest.raises(StoreUnavailable, match="maxmemory"):
        store.claim(make_event_object("refused"))
    admin.config_set("maxmemory", "0")
    claim = store.claim(make_event_object("after"))
    assert claim.state is ClaimState.CLAIMED and claim.attempt == 1
    assert store.finish(claim, ok=True)
    stored = store.get("after")
    assert stored is not None and stored.status.value == "processed" and stored.raw["id"] == "after"
    assert store.get("refused") is None
    admin.close()


def make_event_object(event_id: str) -> Any:
    from webhook_receiver import Event

    return Event.from_dict(make_event("order.paid", event_id=event_id))
