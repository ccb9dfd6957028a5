"""A store built from a database URL recovers by itself when its connections drop (issue 17, item 1).

The store reaches the database through a small TCP proxy of the test's own, so
that the test can (a) terminate exactly the store's own server connections
(``pg_terminate_backend`` / MariaDB ``KILL``, matched by the proxy's ports),
and (b) simulate an outage of the database without touching the machine's
server: the proxy stops listening and drops every connection, then comes
back. A real werkzeug server runs the receiver, with inline and with thread
dispatch; every event must end processed, its handler run once.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from typing import Callable, Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores import EventStatus
from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore
from webhook_receiver.testing import deliver, make_event

from .conftest import DATABASES, SECRET, drop_tables, new_app, require_database
from .processes import free_port, wait_for


class Proxy:
    """A TCP proxy on 127.0.0.1 to a database port, which the test starts, stops and asks for its upstream ports."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.listening: threading.Event | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        running = self.listening = threading.Event()
        running.set()
        threading.Thread(target=self._accept, args=(listener, running), daemon=True).start()

    def _accept(self, listener: socket.socket, running: threading.Event) -> None:
        while running.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()
        listener.close()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def upstream_ports(self) -> list[int]:
        """The local ports of the proxy's live connections to the database: the store's own connections."""
        with self.lock:
            ports = []
            for _, upstream in self.pairs:
                try:
                    ports.append(upstream.getsockname()[1])
                except OSError:
                    pass
            return ports

    def stop(self) -> None:
        """The database is gone: no new connection, and every open one cut."""
        if self.listening is not None:
            self.listening.clear()
            self.listening = None
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        time.sleep(0.1)  # the accept loop sees the flag and closes the listener


def terminate_own_connections(kind: str, url: str, ports: list[int]) -> int:
    """End the server side of exactly the connections that come from *ports*; how many were ended."""
    assert ports, "the store has no connection open to terminate"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if kind == "postgresql":
                ended = conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE client_port = ANY(:ports) AND pid <> pg_backend_pid()"
                    ),
                    {"ports": ports},
                ).all()
                return sum(1 for (done,) in ended if done)
            rows = conn.execute(sa.text("SELECT ID, HOST FROM information_schema.PROCESSLIST")).all()
            client_ports = {pid: host.rsplit(":", 1)[-1] for pid, host in rows if host and ":" in host}
            mine = [pid for pid, port in client_ports.items() if port.isdigit() and int(port) in ports]
            for pid in mine:
                conn.execute(sa.text(f"KILL CONNECTION {int(pid)}"))
            return len(mine)
    finally:
        engine.dispose()


class Shop:
    """A receiver on a real werkzeug server whose SQLAlchemy store goes through the proxy."""

    def __init__(self, kind: str, dispatch: str, prefix: str, live_server: Callable[[Flask], str]) -> None:
        self.kind = kind
        self.direct_url = DATABASES[kind]
        self.proxy = Proxy(sa.make_url(self.direct_url).port or (5432 if kind == "postgresql" else 3306))
        self.proxy.start()
        proxied = sa.make_url(self.direct_url).set(host="127.0.0.1", port=self.proxy.port)
        self.store = SQLAlchemyStore(proxied, prefix=prefix, lease_seconds=30)
        self.check = SQLAlchemyStore(self.direct_url, prefix=prefix)  # the test's own look, not through the proxy
        self.ran: Counter[str] = Counter()
        self.started: Counter[str] = Counter()
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.receiver = WebhookReceiver()

        @self.receiver.on("order.paid")
        def paid(event: Event) -> None:
            with self.lock:
                self.ran[event.id] += 1

        @self.receiver.on("order.fulfilled")
        def fulfilled(event: Event) -> None:  # held open while the test cuts the database off
            with self.lock:
                self.started[event.id] += 1
            assert self.gate.wait(60)
            with self.lock:
                self.ran[event.id] += 1

        self.app = new_app(
            WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
            WEBHOOK_RECEIVER_STORE=self.store,
            WEBHOOK_RECEIVER_DISPATCH=dispatch,
            WEBHOOK_RECEIVER_THREADS=4,
            WEBHOOK_RECEIVER_RETRY_BACKOFF=0.05,
        )
        self.receiver.init_app(self.app)
        self.url = live_server(self.app) + "/webhooks/moltin"
        self.success = 200 if dispatch == "inline" else 202

    def send(self, event_id: str, trigger: str = "order.paid") -> int:
        return int(deliver(self.url, make_event(trigger, event_id=event_id), secret=SECRET, timeout=30).status_code)

    def status(self, event_id: str) -> EventStatus | None:
        stored = self.check.get(event_id)
        return None if stored is None else stored.status

    def wait_processed(self, ids: list[str]) -> None:
        wait_for(lambda: all(self.status(i) is EventStatus.PROCESSED for i in ids), 60, f"{ids} processed")

    def close(self) -> None:
        self.gate.set()
        for config in self.app.extensions["webhook_receiver"].values():
            config.dispatcher.close()
        self.proxy.stop()
        self.store.close()
        self.check.close()


@pytest.fixture(params=[(kind, dispatch) for kind in sorted(DATABASES) for dispatch in ("inline", "thread")])
def shop(request: pytest.FixtureRequest, table_prefix: str, live_server: Callable[[Flask], str]) -> Iterator[Shop]:
    kind, dispatch = request.param
    require_database(DATABASES[kind])
    made = Shop(kind, dispatch, table_prefix, live_server)
    yield made
    made.close()
    drop_tables(DATABASES[kind], table_prefix)


def test_the_store_recovers_after_its_connections_are_terminated_and_after_an_outage(shop: Shop) -> None:
    # warm: the pools hold connections that are about to die
    before = [f"before-{n}" for n in range(4)]
    assert [shop.send(i) for i in before] == [shop.success] * 4
    shop.wait_processed(before)

    # 1. the server ends every connection of the store (only the store's: matched by the proxy's ports)
    assert terminate_own_connections(shop.kind, shop.direct_url, shop.proxy.upstream_ports()) >= 1
    after_kill = [f"killed-{n}" for n in range(4)]
    answers = [shop.send(i) for i in after_kill]
    assert answers == [shop.success] * 4, f"the store did not recover by itself after the terminations: {answers}"
    shop.wait_processed(after_kill)

    # 2. the same, twice more in a row: terminations while the pool is still refilling
    again: list[str] = []
    for round_ in range(2):
        terminate_own_connections(shop.kind, shop.direct_url, shop.proxy.upstream_ports() or [0])
        ids = [f"again-{round_}-{n}" for n in range(3)]
        assert [shop.send(i) for i in ids] == [shop.success] * 3
        again += ids
    shop.wait_processed(again)

    # 3. a handler running while its connections are terminated: its outcome is written on a new one
    answered: list[int] = []
    sender = threading.Thread(target=lambda: answered.append(shop.send("held-kill", "order.fulfilled")))
    sender.start()
    wait_for(lambda: shop.started["held-kill"] == 1, 30, "the held handler to start")
    assert terminate_own_connections(shop.kind, shop.direct_url, shop.proxy.upstream_ports()) >= 1
    shop.gate.set()
    sender.join(60)
    assert answered == [shop.success], "inline: 200 once the outcome is written; thread: the 202 given before"
    shop.wait_processed(["held-kill"])
    shop.gate.clear()

    # 4. an outage, with events in flight (thread dispatch: handlers running while the database goes away)
    in_flight = [f"in-flight-{n}" for n in range(2)] if shop.success == 202 else []
    for event_id in in_flight:
        assert shop.send(event_id, "order.fulfilled") == 202
    wait_for(lambda: all(shop.started[i] == 1 for i in in_flight), 30, "the in-flight handlers to start")
    shop.proxy.stop()
    shop.gate.set()  # the handlers finish while their outcomes cannot be written
    assert shop.send("during-outage") == 503, "no 2xx while the database is away"
    time.sleep(1.0)  # the outage lasts a moment; the workers keep trying to write their outcomes
    shop.proxy.start()
    after_outage = [f"after-outage-{n}" for n in range(4)]
    answers = [shop.send(i) for i in after_outage]
    assert answers == [shop.success] * 4, f"the store did not recover by itself after the outage: {answers}"
    assert shop.send("during-outage") == shop.success, "upstream's retry of the refused delivery is taken"
    everything = before + after_kill + again + ["held-kill"] + in_flight + after_outage + ["during-outage"]
    shop.wait_processed(everything)
    assert {event_id: shop.ran[event_id] for event_id in everything} == dict.fromkeys(everything, 1), (
        "every event's handler ran exactly once"
    )
    assert (
        shop.check.events(status=EventStatus.PROCESSING) == [] and shop.check.events(status=EventStatus.PENDING) == []
    )
