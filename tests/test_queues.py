"""Consuming from RabbitMQ over STOMP and from SQS (moto's server): the same handlers, store and guarantees as webhooks.

Every test talks to the real broker or SQS endpoint over sockets; nothing of
stomp.py or boto3 is mocked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.transports import Consumer, ConsumerStats, TransportUnavailable
from webhook_receiver.transports.stomp import StompTransport

from .conftest import SECRET, new_app
from .processes import wait_for
from .queues import (  # noqa: F401
    PASSWORD,
    STOMP_PORT,
    USER,
    Rabbit,
    Sqs,
    cloudevent,
    consume,
    moto_endpoint_fixture,
    rabbit_fixture,
)


class Queue:
    """One test queue of either transport, with its dead-letter queue."""

    def __init__(self, kind: str, backend: Any) -> None:
        self.kind = kind
        self.backend = backend
        self.url = backend.url if kind == "stomp" else f"{backend.url}?wait=1"

    def publish(self, bodies: list[bytes]) -> None:
        self.backend.publish(bodies)

    def count(self) -> int:
        return int(self.backend.count())

    def dead(self) -> int:
        return int(self.backend.count(self.backend.dead if self.kind == "stomp" else self.backend.dead_url))

    def take_dead(self) -> list[bytes]:
        return list(self.backend.take_all(self.backend.dead if self.kind == "stomp" else self.backend.dead_url))


@pytest.fixture(params=["stomp", "sqs"])
def queue(request: pytest.FixtureRequest) -> Queue:
    if request.param == "stomp":
        return Queue("stomp", request.getfixturevalue("rabbit"))
    return Queue("sqs", Sqs(request.getfixturevalue("moto_endpoint"), visibility=30, max_receives=5))


def make_app(receiver: WebhookReceiver, tmp_path: Path, **config: Any) -> Flask:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=f"sqlite:////{tmp_path}/events.sqlite3")
    app.config.update(config)
    receiver.init_app(app)
    return app


def test_round_trip_into_the_same_handlers_and_store(queue: Queue, tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    seen: list[Event] = []
    receiver.on("order.paid", "cart.updated")(seen.append)
    app = make_app(receiver, tmp_path)
    queue.publish(
        [
            cloudevent("rt-1"),
            cloudevent("rt-2", trigger="cart.updated", included={"meta": {"includes_elided": True}}),
            cloudevent("rt-3", trigger="product.deleted"),  # no handler: ignored, and acknowledged
        ]
    )
    consumer = receiver.consumer(app, queue.url)
    consume(consumer, lambda stats: stats.acked >= 3)

    assert sorted(event.id for event in seen) == ["rt-1", "rt-2"]
    by_id = {event.id: event for event in seen}
    assert by_id["rt-2"].includes_elided and not by_id["rt-1"].includes_elided
    assert {event.transport for event in seen} == {queue.kind}
    assert by_id["rt-1"].store_id == "b33e328f-31a8-4d57-b0a3-ebf1039b3756"
    assert by_id["rt-1"].integration["integration_type"] == ("stomp" if queue.kind == "stomp" else "aws_sqs")
    store = receiver.get_store(app)
    for event_id in ("rt-1", "rt-2"):
        stored = store.get(event_id)
        assert stored is not None and stored.status.value == "processed"
        assert stored.raw["receivedvia"] == queue.kind
    assert consumer.stats.outcomes == {"processed": 2, "ignored": 1}
    assert queue.count() == 0


def test_a_redelivered_event_is_acknowledged_at_once_and_never_run_again(queue: Queue, tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    runs: list[str] = []
    receiver.on("order.paid")(lambda event: runs.append(event.id))
    app = make_app(receiver, tmp_path)
    queue.publish([cloudevent("dup-1")])
    consume(receiver.consumer(app, queue.url), lambda stats: stats.acked >= 1)
    queue.publish([cloudevent("dup-1"), cloudevent("dup-1"), cloudevent("dup-2")])
    consumer = receiver.consumer(app, queue.url)
    consume(consumer, lambda stats: stats.acked >= 3)
    assert sorted(runs) == ["dup-1", "dup-2"]
    assert consumer.stats.outcomes == {"duplicate": 2, "processed": 1}
    assert queue.count() == 0
    # the two redeliveries are in dup-1's delivery log (the inbox's event page), the first delivery is not
    logged = receiver.get_store(app).deliveries("dup-1")
    assert [(a.via, a.code, a.answer) for a in logged] == [(queue.kind, None, "duplicate")] * 2
    assert receiver.get_store(app).deliveries("dup-2") == []


def test_a_failing_handler_leaves_the_message_on_the_queue_until_it_succeeds(queue: Queue, tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    runs: list[str] = []
    broken = threading.Event()
    broken.set()

    @receiver.on("order.paid")
    def ship(event: Event) -> None:
        runs.append(event.id)
        if broken.is_set():
            raise RuntimeError("the warehouse is down")

    app = make_app(receiver, tmp_path)
    queue.publish([cloudevent("fail-1")])
    consumer = receiver.consumer(app, queue.url)
    consumer.retry_backoff = 0.05
    consume(consumer, lambda stats: stats.retried >= 2)
    assert consumer.stats.acked == 0
    assert queue.count() == 1  # given back, not acknowledged: nothing lost
    stored = receiver.get_store(app).get("fail-1")
    assert stored is not None and stored.status.value == "failed"

    broken.clear()
    consumer = receiver.consumer(app, queue.url)
    consume(consumer, lambda stats: stats.acked >= 1)
    assert consumer.stats.outcomes == {"processed": 1}
    assert len(runs) >= 3 and set(runs) == {"fail-1"}
    assert queue.count() == 0


def test_background_dispatch_acknowledges_once_the_event_is_stored_pending(queue: Queue, tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda event: None)
    app = make_app(receiver, tmp_path, WEBHOOK_RECEIVER_DISPATCH="thread")
    dispatcher = receiver.get_config(app).dispatcher
    dispatcher.close()  # no worker runs it here: the acknowledgement must not wait for the handlers
    queue.publish([cloudevent("bg-1"), cloudevent("bg-2")])
    consumer = receiver.consumer(app, queue.url)
    consume(consumer, lambda stats: stats.acked >= 2)
    assert consumer.stats.outcomes == {"accepted": 2}
    store = receiver.get_store(app)
    assert {store.get(i).status.value for i in ("bg-1", "bg-2")} == {"pending"}  # type: ignore[union-attr]
    assert queue.count() == 0


def test_poison_goes_to_the_dead_letter_queue_and_the_next_message_runs(
    queue: Queue, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = WebhookReceiver()
    runs: list[str] = []
    receiver.on("order.paid")(lambda event: runs.append(event.id))
    app = make_app(receiver, tmp_path, WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH=4096)
    poison = [
        b"not json at all, password=hunter2-poison\x1b[2J",
        json.dumps({"type": "order.paid", "data": {}}).encode(),  # no id
        json.dumps({"id": "no-type"}).encode(),
        json.dumps({"id": "bad-type", "type": "Drop Tables"}).encode(),
        cloudevent("webhook-like", triggered_by="order.created"),  # read back, it would run other handlers
        cloudevent("too-big", data={"id": "o", "type": "order", "notes": "x" * 5000}),
    ]
    queue.publish([*poison, cloudevent("after-poison")])
    consumer = receiver.consumer(app, queue.url)
    with caplog.at_level(logging.INFO, logger="webhook_receiver"):
        consume(consumer, lambda stats: stats.acked >= 1 and queue.dead() >= len(poison))
    assert runs == ["after-poison"]
    assert sorted(queue.take_dead()) == sorted(poison)
    assert queue.count() == 0
    text = caplog.text
    assert text.count("is not an Elastic Path CloudEvent") >= len(poison)
    assert "larger than the limit of 4096 bytes" in text and "has no id" in text
    assert "hunter2" not in text and "\x1b" not in text  # the body is never logged


@contextlib.contextmanager
def locked_sqlite(path: Path) -> Iterator[None]:
    """The SQLite file at *path* locked by another process (``BEGIN EXCLUSIVE``) until the block ends."""
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline() == b"locked\n"
        yield
    finally:
        assert locker.stdin is not None
        locker.stdin.close()
        locker.wait(10)


def locked_store_app(receiver: WebhookReceiver, path: Path) -> Flask:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=SQLiteStore(str(path), timeout=0.2))
    receiver.init_app(app)
    receiver.get_store(app).count_due()  # the schema exists before the lock is taken
    return app


def test_a_store_outage_acknowledges_nothing_and_loses_nothing(queue: Queue, tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    runs: list[str] = []
    receiver.on("order.paid")(lambda event: runs.append(event.id))
    app = locked_store_app(receiver, tmp_path / "locked.sqlite3")
    ids = [f"outage-{n}" for n in range(5)]
    consumer = receiver.consumer(app, queue.url)
    consumer.retry_backoff = 0.05
    running = threading.Thread(target=lambda: consumer.run(until=lambda stats: stats.acked >= 5), daemon=True)
    try:
        with locked_sqlite(tmp_path / "locked.sqlite3"):
            queue.publish([cloudevent(event_id) for event_id in ids])
            running.start()
            wait_for(lambda: consumer.stats.retried >= 1, 60, "the outage seen")
            time.sleep(2)
            assert consumer.stats.acked == 0 and runs == []
            if queue.kind == "sqs":  # moto counts the messages in flight; RabbitMQ counts only those ready
                assert queue.count() == 5  # nothing acknowledged, nothing lost
        running.join(90)  # the same consumer goes on once the store takes writes again
    finally:
        consumer.stop()
    assert not running.is_alive(), consumer.stats
    assert sorted(runs) == ids
    assert queue.count() == 0


def test_a_store_outage_takes_no_message_so_sqs_dead_letters_none(
    moto_endpoint: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each SQS receive counts toward the redrive policy: a consumer that kept taking messages while the store was
    down dead-lettered valid events after maxReceiveCount receives (3 here, in about 4 s). The store is a
    redis-server that is stopped, then started again on its port."""
    from .processes import Processes, free_port

    sqs = Sqs(moto_endpoint, max_receives=3)
    receiver = WebhookReceiver()
    runs: list[str] = []
    receiver.on("order.paid")(lambda event: runs.append(event.id))
    port = free_port()
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=f"redis://127.0.0.1:{port}/0")
    receiver.init_app(app)
    ids = [f"sqs-outage-{n}" for n in range(3)]
    consumer = receiver.consumer(app, f"{sqs.url}?wait=1")
    consumer.retry_backoff = 0.05  # each message visible again at once: the old loop took it again and again
    running = threading.Thread(target=lambda: consumer.run(until=lambda stats: stats.acked >= 3), daemon=True)
    processes = Processes({})
    try:
        with caplog.at_level(logging.INFO, logger="webhook_receiver"):
            sqs.publish([cloudevent(event_id) for event_id in ids])
            running.start()  # no server on the store's port: down
            wait_for(lambda: consumer.stats.retried >= 1, 30, "the outage seen")
            time.sleep(6)  # the old loop had dead-lettered all three by now
            assert consumer.stats.retried <= 3 and runs == []  # each message taken once at most
            assert sqs.count(sqs.dead_url) == 0
            processes.redis_server(port, tmp_path / "redis.log")  # the store is back
            running.join(90)
    finally:
        consumer.stop()
        processes.stop_all()
    assert not running.is_alive(), consumer.stats
    assert sorted(runs) == ids
    assert sqs.count() == 0 and sqs.count(sqs.dead_url) == 0
    assert "the store does not answer; no message is taken until it does" in caplog.text
    assert "the store answers again; taking messages" in caplog.text


def test_sqs_keeps_a_long_handlers_message_from_a_competing_consumer(moto_endpoint: str, tmp_path: Path) -> None:
    sqs = Sqs(moto_endpoint, visibility=2)
    receiver = WebhookReceiver()
    started, release = threading.Event(), threading.Event()
    runs: list[str] = []

    @receiver.on("order.paid")
    def slow(event: Event) -> None:
        runs.append(event.id)
        started.set()
        release.wait(60)

    app = make_app(receiver, tmp_path)
    sqs.publish([cloudevent("slow-1")])
    first = receiver.consumer(app, f"{sqs.url}?wait=1", concurrency=1, prefetch=1)  # takes nothing while it runs
    second = receiver.consumer(app, f"{sqs.url}?wait=1")
    thread = threading.Thread(target=consume, args=(first, lambda stats: stats.acked >= 1), daemon=True)
    thread.start()
    assert started.wait(60)
    # The other consumer polls for three visibility timeouts' worth of the handler's run.
    polls = 0

    def polled_enough(stats: ConsumerStats) -> bool:
        nonlocal polls
        polls += 1
        return polls > 6

    consume(second, polled_enough)
    release.set()
    thread.join(60)
    assert runs == ["slow-1"]
    assert second.stats == ConsumerStats()  # it never saw the message
    assert first.stats.outcomes == {"processed": 1}
    assert sqs.count() == 0


def held_by_a_slow_handler(
    moto_endpoint: str, tmp_path: Path, event_id: str
) -> tuple[Sqs, Consumer, threading.Event, threading.Event]:
    """An SQS queue (visibility 2 s) holding *event_id*, and a consumer whose handler waits for the last event."""
    sqs = Sqs(moto_endpoint, visibility=2)
    receiver = WebhookReceiver()
    started, release = threading.Event(), threading.Event()

    @receiver.on("order.paid")
    def slow(event: Event) -> None:
        started.set()
        release.wait(60)

    app = make_app(receiver, tmp_path)
    sqs.publish([cloudevent(event_id)])
    return sqs, receiver.consumer(app, f"{sqs.url}?wait=1", concurrency=1, prefetch=1), started, release


def test_sqs_says_when_the_queue_did_not_keep_a_message_still_being_handled(
    moto_endpoint: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ChangeMessageVisibilityBatch answers failures in its body, not as an error: they went unseen."""
    sqs, consumer, started, release = held_by_a_slow_handler(moto_endpoint, tmp_path, "kept-1")
    thread = threading.Thread(target=consume, args=(consumer, lambda stats: stats.acked >= 1), daemon=True)
    with caplog.at_level(logging.WARNING, logger="webhook_receiver"):
        thread.start()
        assert started.wait(60)
        held = next(iter(consumer._in_flight.values()))  # the receipt only the consumer knows
        sqs.client.delete_message(QueueUrl=sqs.url, ReceiptHandle=held.handle)  # its receipt is no longer valid
        wait_for(lambda: "the queue did not keep 1 message(s)" in caplog.text, 30, "the keep-alive's failure said")
        release.set()
        thread.join(60)
    assert "ReceiptHandleIsInvalid" in caplog.text


def test_sqs_says_when_the_queue_has_no_redrive_policy(
    moto_endpoint: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sqs = Sqs(moto_endpoint, redrive=False)
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda event: None)
    app = make_app(receiver, tmp_path)
    sqs.publish([b"{oops"])
    consumer = receiver.consumer(app, f"{sqs.url}?wait=1")
    with caplog.at_level(logging.INFO, logger="webhook_receiver"):
        consume(consumer, lambda stats: stats.poison >= 1)
    assert "has no redrive policy" in caplog.text
    assert "comes back in 300 s" in caplog.text


def test_sigterm_lets_the_running_handler_finish_and_leaves_the_rest(rabbit: Rabbit, tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    started, stopping = threading.Event(), threading.Event()
    runs: list[str] = []
    consumer: Consumer | None = None

    @receiver.on("order.paid")
    def ship(event: Event) -> None:
        started.set()
        assert consumer is not None
        consumer.stop()  # as SIGTERM does, mid-handler
        stopping.set()
        runs.append(event.id)

    app = make_app(receiver, tmp_path)
    rabbit.publish([cloudevent(f"term-{n}") for n in range(3)])
    consumer = receiver.consumer(app, rabbit.url, concurrency=1)
    consume(consumer, lambda stats: False)
    assert runs == ["term-0"] and consumer.stats.outcomes == {"processed": 1}
    assert rabbit.count() == 2  # not started: still on the queue


def test_at_stop_messages_waiting_for_a_worker_thread_are_given_back_at_once(
    moto_endpoint: str, tmp_path: Path
) -> None:
    """Slow handlers run on threads; the messages not started were held for the whole grace period.

    On SQS: a message given back there is visible again at once. RabbitMQ
    takes no NACK after the UNSUBSCRIBE the stop begins with (one before it
    would be sent straight back to this consumer): its messages come back as
    the connection closes, a second past the grace at most.
    """
    import time

    sqs = Sqs(moto_endpoint, visibility=30)

    def visible() -> int:
        found = sqs.client.get_queue_attributes(QueueUrl=sqs.url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(found["Attributes"]["ApproximateNumberOfMessages"])

    receiver = WebhookReceiver()
    slow_started = threading.Event()
    release = threading.Event()

    @receiver.on("order.paid")
    def work(event: Event) -> None:
        if event.id.startswith("quick"):
            time.sleep(0.05)  # slow enough for the consumer to move to threads
        else:
            slow_started.set()
            release.wait(20)

    app = make_app(receiver, tmp_path)
    sqs.publish([cloudevent(f"quick-{n}") for n in range(4)])
    consumer = receiver.consumer(app, f"{sqs.url}?wait=1", concurrency=2, grace=15)
    done = threading.Thread(target=consumer.run, daemon=True)
    done.start()
    try:
        deadline = time.monotonic() + 30
        while consumer.stats.acked < 4:
            assert time.monotonic() < deadline, consumer.stats
            time.sleep(0.05)
        sqs.publish([cloudevent(f"slow-{n}") for n in range(6)])  # two run, the others wait for a thread
        assert slow_started.wait(30)
        deadline = time.monotonic() + 10
        while 6 - visible() <= 2:  # more taken than run: some wait for a thread
            assert time.monotonic() < deadline, visible()
            time.sleep(0.1)
        time.sleep(0.5)
        consumer.stop()
        deadline = time.monotonic() + 5
        while visible() < 4:  # given back while the two running ones still have their grace
            assert time.monotonic() < deadline, f"{visible()} visible on the queue 5 s after the stop"
            time.sleep(0.05)
    finally:
        release.set()
        done.join(30)
    assert not done.is_alive()


class Proxy:
    """A TCP proxy to a port of 127.0.0.1 that can be cut (every connection closed) and opened again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.server.listen(16)
        self.open = threading.Event()
        self.open.set()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open.clear()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.sockets = []

    def close(self) -> None:
        self.cut()
        self.server.close()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    found = Proxy(STOMP_PORT)
    yield found
    found.close()


def test_a_broker_that_goes_away_is_reconnected_to(
    rabbit: Rabbit,
    proxy: Proxy,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = WebhookReceiver()
    runs: list[str] = []
    receiver.on("order.paid")(lambda event: runs.append(event.id))
    app = make_app(receiver, tmp_path)
    proxy.open.clear()  # the broker is away when the consumer starts
    url = f"stomp://{USER}:{PASSWORD}@127.0.0.1:{proxy.port}/queue/{rabbit.name}"
    consumer = receiver.consumer(app, url)
    rabbit.publish([cloudevent("rc-1")])
    attempts = 0

    def scenario(stats: ConsumerStats) -> bool:
        nonlocal attempts
        attempts += 1
        if not proxy.open.is_set() and "cannot consume from" in caplog.text:
            proxy.open.set()
        if stats.acked == 1 and "lost the connection" not in caplog.text:
            proxy.cut()
            proxy.open.set()
            rabbit.publish([cloudevent("rc-2")])
        # processed, not acknowledged: rc-1's ACK may be cut with the connection, rc-1 then comes again (a duplicate)
        return stats.outcomes.get("processed", 0) >= 2

    with caplog.at_level(logging.INFO, logger="webhook_receiver"):
        consume(consumer, scenario)
    assert sorted(runs) == ["rc-1", "rc-2"]
    assert "trying again in" in caplog.text and "reconnecting" in caplog.text
    assert caplog.text.count("consuming from") >= 2
    assert rabbit.count() == 0


def test_a_connection_lost_soon_after_it_was_made_is_made_again_after_a_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A destination the broker refuses after CONNECT: the consumer reconnected at once, a dozen times a second."""
    import time
    import uuid

    receiver = WebhookReceiver()
    app = make_app(receiver, tmp_path)
    consumer = receiver.consumer(app, f"stomp://{USER}:{PASSWORD}@127.0.0.1:{STOMP_PORT}/bogus/whr-{uuid.uuid4().hex}")
    until = time.monotonic() + 3.0
    with caplog.at_level(logging.INFO, logger="webhook_receiver"):
        consume(consumer, lambda stats: time.monotonic() > until)
    connects = caplog.text.count("connecting to")
    assert 2 <= connects <= 4, caplog.text  # at 0, then 0.5, 1.5 and 3.5 s after the first loss
    assert "reconnecting in 0.5 s" in caplog.text and "reconnecting in 1.0 s" in caplog.text


def test_stomp_failover_takes_the_next_address(rabbit: Rabbit, tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    runs: list[str] = []
    receiver.on("order.paid")(lambda event: runs.append(event.id))
    app = make_app(receiver, tmp_path)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    rabbit.publish([cloudevent("fo-1")])
    consumer = receiver.consumer(
        app, f"stomp://{USER}:{PASSWORD}@127.0.0.1:{dead_port}/queue/{rabbit.name}", f"stomp://127.0.0.1:{STOMP_PORT}"
    )
    assert "and 1 failover address" in repr(consumer)
    consume(consumer, lambda stats: stats.acked >= 1)
    assert runs == ["fo-1"]


def test_stomp_credentials_are_never_shown(
    rabbit: Rabbit,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = "pw-never-shown-8c1d"
    transport = StompTransport([f"stomp://someone:{password}@127.0.0.1:{STOMP_PORT}/queue/{rabbit.name}"])
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(TransportUnavailable) as refused:  # RabbitMQ refuses the login
            transport.connect()
        assert password not in str(refused.value) and "someone:***@" in str(refused.value)
        assert password not in repr(transport) and password not in transport.description
        monkeypatch.setenv("WEBHOOK_RECEIVER_STOMP_USERNAME", "someone")
        monkeypatch.setenv("WEBHOOK_RECEIVER_STOMP_PASSWORD", password)
        from_env = StompTransport([f"stomp://127.0.0.1:{STOMP_PORT}/queue/{rabbit.name}"])
        assert from_env.username == "someone" and password not in repr(from_env)
        with pytest.raises(TransportUnavailable) as again:
            from_env.connect()
        assert password not in str(again.value)
        receiver = WebhookReceiver()
        receiver.on("order.paid")(lambda event: None)
        app = make_app(receiver, tmp_path)
        consumer = receiver.consumer(app, f"stomp://{USER}:{PASSWORD}@127.0.0.1:{STOMP_PORT}/queue/{rabbit.name}")
        assert f":{PASSWORD}@" not in repr(consumer)
        rabbit.publish([cloudevent("cred-1")])
        consume(consumer, lambda stats: stats.acked >= 1)
    assert password not in caplog.text and f"{USER}:{PASSWORD}@" not in caplog.text
    for bad in (f"stomp://u:{password}@host:notaport/queue/x", f"stomp://u:{password}@host/", "ftp://x"):
        with pytest.raises(ValueError) as error:
            StompTransport([bad])
        assert password not in str(error.value)


def test_sqs_credentials_are_never_shown(moto_endpoint: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from .queues import AWS_ENV

    secret = AWS_ENV["AWS_SECRET_ACCESS_KEY"]
    sqs = Sqs(moto_endpoint)
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda event: None)
    app = make_app(receiver, tmp_path)
    sqs.publish([cloudevent("sqs-cred-1"), b"poison"])
    with caplog.at_level(logging.DEBUG):
        consumer = receiver.consumer(app, f"{sqs.url}?wait=1")
        consume(consumer, lambda stats: stats.acked >= 1 and stats.poison >= 1)
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        from webhook_receiver.transports.sqs import SqsTransport

        away = SqsTransport(f"http://127.0.0.1:{port}/123456789012/epcc-away")
        with pytest.raises(TransportUnavailable) as unreachable:
            away.connect()
    assert "EndpointConnectionError" in str(unreachable.value)
    for shown in (caplog.text, repr(consumer), repr(away), str(unreachable.value)):
        assert secret not in shown


def test_stomps_heartbeat_timeout_is_taken_as_a_lost_connection() -> None:
    """stomp.py's heart-beat thread calls ``on_heartbeat_timeout`` on every listener unguarded: our listener had
    none, so that thread died with a traceback, and the loss went unnoticed until the socket closed."""
    import stomp

    from webhook_receiver.transports.stomp import _Inbox, _Listener

    callbacks = {name for name in dir(stomp.ConnectionListener) if name.startswith("on_")}
    assert "on_heartbeat_timeout" in callbacks
    listener = _Listener(_Inbox(), 1)
    listener.on_heartbeat_timeout()
    assert listener.lost == "the broker's heart-beats stopped"


def test_a_store_that_reads_but_refuses_writes_takes_no_message_either(moto_endpoint: str, tmp_path: Path) -> None:
    """A SQLite file another process holds locked answers reads: a read probe let the consumer take the messages
    again and again (an ignored event, which writes nothing, ended the outage too) until SQS dead-lettered them."""
    sqs = Sqs(moto_endpoint, max_receives=3)
    receiver = WebhookReceiver()
    runs: list[str] = []
    receiver.on("order.paid")(lambda event: runs.append(event.id))
    app = locked_store_app(receiver, tmp_path / "locked.sqlite3")
    paid = [f"paid-{n}" for n in range(4)]
    sqs.publish(
        [cloudevent(event_id) for event_id in paid] + [cloudevent(f"cart-{n}", "cart.updated") for n in range(4)]
    )
    consumer = receiver.consumer(app, f"{sqs.url}?wait=1", concurrency=1)
    consumer.retry_backoff = 0.05
    running = threading.Thread(target=lambda: consumer.run(until=lambda stats: stats.acked >= 8), daemon=True)
    try:
        with locked_sqlite(tmp_path / "locked.sqlite3"):
            running.start()
            wait_for(lambda: consumer.stats.retried >= 1, 30, "the outage seen")
            time.sleep(8)
            assert sqs.count(sqs.dead_url) == 0 and runs == []
        running.join(90)
    finally:
        consumer.stop()
    assert not running.is_alive(), consumer.stats
    assert sorted(runs) == paid and sqs.count(sqs.dead_url) == 0


def test_a_transport_whose_keep_alive_returns_nothing_keeps_beating(moto_endpoint: str, tmp_path: Path) -> None:
    """Transport.keep_alive returned None before it returned the refused messages: a transport written so killed
    the keep-alive thread at its first beat, and long handlers' messages went back to the queue."""
    sqs, consumer, started, release = held_by_a_slow_handler(moto_endpoint, tmp_path, "older-1")
    beats: list[float] = []
    keep_alive = consumer.transport.keep_alive

    def older(messages: list[Any]) -> None:
        keep_alive(messages)
        beats.append(time.monotonic())

    consumer.transport.keep_alive = older  # type: ignore[assignment,method-assign]
    thread = threading.Thread(target=consume, args=(consumer, lambda stats: stats.acked >= 1), daemon=True)
    thread.start()
    assert started.wait(60)
    wait_for(lambda: len(beats) >= 3, 30, "three beats")
    release.set()
    thread.join(60)
    assert consumer.stats.outcomes == {"processed": 1} and sqs.count() == 0


def test_a_message_at_its_last_allowed_receive_is_said_to_go_to_the_dead_letter_queue(
    moto_endpoint: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The log had promised another delivery while SQS moved the message to its dead-letter queue."""
    sqs = Sqs(moto_endpoint, max_receives=2)
    receiver = WebhookReceiver()

    @receiver.on("order.paid")
    def failing(event: Event) -> None:
        raise RuntimeError("the shop's API is down")

    app = make_app(receiver, tmp_path)
    sqs.publish([cloudevent("last-receive")])
    consumer = receiver.consumer(app, f"{sqs.url}?wait=1")
    consumer.retry_backoff = 0.05
    with caplog.at_level(logging.WARNING, logger="webhook_receiver"):
        consume(consumer, lambda stats: stats.retried >= 2)
    assert "that was its receive 2, the last the queue's redrive policy allows (maxReceiveCount 2)" in caplog.text
    assert caplog.text.count("the last the queue's redrive policy allows") == 1
    # moto, as SQS, moves it at the receive past the count, once its visibility timeout has run out (a loaded
    # machine may still be inside it at the first receive: asked again for up to 10 s)
    until = time.monotonic() + 10
    while sqs.count(sqs.dead_url) == 0 and time.monotonic() < until:
        sqs.client.receive_message(QueueUrl=sqs.url, WaitTimeSeconds=1)
    assert sqs.count(sqs.dead_url) == 1 and sqs.count() == 0


@pytest.mark.parametrize(
    "url, region, expected, endpoint",
    [
        # the legacy us-east-1 host was read as the region 'queue'
        ("https://queue.amazonaws.com/1/epcc-q", None, "us-east-1", None),
        ("https://queue.amazonaws.com/1/epcc-q", "us-east-1", "us-east-1", None),
        ("https://us-west-2.queue.amazonaws.com/1/epcc-q", None, "us-west-2", None),
        ("https://sqs.eusc-de-east-1.amazonaws.com/1/epcc-q", None, "eusc-de-east-1", None),  # the sovereign cloud
        ("https://sqs-fips.us-gov-west-1.amazonaws.com/1/epcc-q", None, "us-gov-west-1", None),
        ("https://sqs.us-east-1.api.aws/1/epcc-q", None, "us-east-1", None),
        ("https://sqs.cn-north-1.amazonaws.com.cn/1/epcc-q", None, "cn-north-1", None),
        (
            "https://vpce-0a1-b2.sqs.us-east-1.vpce.amazonaws.com/1/epcc-q",
            None,
            "us-east-1",
            "https://vpce-0a1-b2.sqs.us-east-1.vpce.amazonaws.com",
        ),
        ("http://127.0.0.1:9324/000000000000/epcc-q", "elasticmq", "elasticmq", "http://127.0.0.1:9324"),
    ],
)
def test_an_sqs_queue_url_names_its_region(url: str, region: str | None, expected: str, endpoint: str | None) -> None:
    from webhook_receiver.transports.sqs import SqsTransport

    transport = SqsTransport(url, region=region)
    assert (transport.region, transport.endpoint_url) == (expected, endpoint)
