"""Messages per second through ``consume`` against a bare consumer of the same queue, side by side in one run.

STOMP (the machine's RabbitMQ, its STOMP plugin on 61613): the receiver's
consumer (``receiver.consumer(app, url)``, inline dispatch into a SQLite store
in a fresh folder, one no-op handler) against a bare stomp.py consumer that
only parses each message (orjson) and acknowledges it, with the same
subscription (``ack: client-individual``, the same prefetch). SQS (moto's
threaded server on 127.0.0.1): the same consumer against a bare boto3 loop
that receives up to 10 messages with long polling, parses each and deletes
it. Each round publishes ``--messages`` fresh CloudEvents to a queue of its own
and times each consumer from its start until every message is acknowledged;
rounds alternate the two. The figure is the ratio of the medians.

On STOMP a third consumer runs in each round, the *durable floor*: the bare
consumer plus, between parse and ack, the two writes of ``bench/apps.py``'s
SQLite floor (claim the id with the body, mark it processed; each its own
transaction, WAL, ``synchronous=NORMAL``): what any consumer that keeps its
promise must do at the least. Its line says how far below the bare consumer
making a message durable alone puts a consumer, and where the receiver's
consumer stands against it.

Beside each rate, the CPU time the consumer's process spent per message
(user and system, from ``getrusage`` over the span that is timed, from the
consumer's start, connection included, to the last acknowledgement; the broker, and
moto's server, run in processes of their own and are not in it): a shared
machine's load slows the wall clock of both consumers, and disturbs the CPU
time much less. The CPU ratio is the bare consumer's time over the receiver's.

With ``--in-memory`` no broker is involved: the receiver's consumer is given
the messages by a transport that holds them in memory, and
``Consumer.handle_many`` runs on batches of 8 (the consumer's default batch):
the CPU time a message, and the instructions a message under callgrind
(collection switched on around each batch only), the consumer's own cost,
which the broker's stream then roughly doubles (see the docs' Queues page).

Run it by hand from the repository root::

    python bench/consume.py --transport stomp --messages 5000 --rounds 3
    python bench/consume.py --transport sqs --messages 1000 --rounds 3
    python bench/consume.py --in-memory --messages 3000

Needs ``pip install -e ".[dev]"`` (stomp.py, boto3, moto[server]).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.queues import AWS_ENV, PASSWORD, STOMP_HOST, STOMP_PORT, USER, Rabbit, Sqs  # noqa: E402
from webhook_receiver import WebhookReceiver  # noqa: E402
from webhook_receiver.transports.registry import default_prefetch  # noqa: E402


def bodies(count: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "specversion": "1.0",
                "id": f"bench-{uuid.uuid4().hex}",
                "type": "order.paid",
                "source": "https://epcc-integration.global.ssl.fastly.net",
                "datacontenttype": "application/json",
                "integrationid": "e17db0d8-467b-4bf3-9c26-3dfe8b96e9d7",
                "storeid": "b33e328f-31a8-4d57-b0a3-ebf1039b3756",
                "data": {"id": uuid.uuid4().hex, "type": "order", "status": "complete", "payment": "paid"},
            }
        ).encode()
        for _ in range(count)
    ]


OPTIONS: dict[str, Any] = {}


def cpu_seconds() -> float:
    """The CPU time (user and system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def moto_server() -> tuple[subprocess.Popen[bytes], str]:
    """moto's SQS server in a process of its own (its CPU time is not the consumers'), and its endpoint."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto's server did not start") from None
            time.sleep(0.1)
    return server, f"http://127.0.0.1:{port}"


def receiver_consumer(url: str, count: int, concurrency: int) -> tuple[float, float]:
    """Seconds for ``receiver.consumer`` to acknowledge *count* messages, and the CPU seconds meanwhile."""
    from flask import Flask

    receiver = WebhookReceiver(secret_key="b" * 32)
    receiver.on("order.paid")(lambda event: None)
    app = Flask(__name__, instance_path=tempfile.mkdtemp(prefix="whr-bench-"))
    app.config["WEBHOOK_RECEIVER_STORE"] = "sqlite:///events.sqlite3" if OPTIONS["store"] == "sqlite" else "memory://"
    app.config["WEBHOOK_RECEIVER_DISPATCH"] = OPTIONS["dispatch"]
    receiver.init_app(app)
    if OPTIONS["dispatch"] == "thread":  # as consume --no-work: the handlers run in other processes
        receiver.get_config(app).dispatcher.close()
    consumer = receiver.consumer(app, url, concurrency=concurrency, prefetch=OPTIONS["prefetch"])
    started, used = time.perf_counter(), cpu_seconds()
    consumer.run(until=lambda stats: stats.acked >= count)
    elapsed, used = time.perf_counter() - started, cpu_seconds() - used
    assert consumer.stats.outcomes == {"processed" if OPTIONS["dispatch"] == "inline" else "accepted": count}, (
        consumer.stats
    )
    receiver.get_config(app).dispatcher.close()
    return elapsed, used


def floor_database() -> sqlite3.Connection:
    """The durable floor's SQLite file, as ``bench/apps.py``'s ``floor_sqlite_app`` opens it."""
    path = Path(tempfile.mkdtemp(prefix="whr-bench-floor-")) / "floor.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # used in stomp.py's thread
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE events (id TEXT PRIMARY KEY, body TEXT NOT NULL, status TEXT NOT NULL)")
    return conn


def bare_stomp(rabbit: Rabbit, count: int, prefetch: int, durable: bool = False) -> tuple[float, float]:
    """Seconds for a bare stomp.py consumer (parse, ack) to take *count* messages, and the CPU seconds meanwhile.

    *durable*: the floor of a durable consumer: between parse and ack, the
    writes of ``bench/apps.py``'s SQLite floor (claim the id with the body,
    then mark it processed, each its own transaction).
    """
    import stomp

    done = threading.Event()
    taken = 0
    conn = floor_database() if durable else None

    class Listener(stomp.ConnectionListener):  # type: ignore[misc]
        def on_message(self, frame: Any) -> None:
            nonlocal taken
            body = orjson.loads(frame.body)
            if conn is not None:
                conn.execute(
                    "INSERT INTO events (id, body, status) VALUES (?, ?, 'processing') ON CONFLICT (id) DO NOTHING",
                    (body["id"], frame.body),
                )
                conn.execute("UPDATE events SET status = 'processed' WHERE id = ?", (body["id"],))
            connection.ack(frame.headers["ack"])
            taken += 1
            if taken >= count:
                done.set()

    started, used = time.perf_counter(), cpu_seconds()
    connection = stomp.Connection12([(STOMP_HOST, STOMP_PORT)], vhost="/", auto_decode=False, heartbeats=(10000, 10000))
    connection.set_listener("bare", Listener())
    connection.connect(USER, PASSWORD, wait=True)
    connection.subscribe(
        f"/queue/{rabbit.name}", id="bare", ack="client-individual", headers={"prefetch-count": str(prefetch)}
    )
    assert done.wait(600)
    elapsed, used = time.perf_counter() - started, cpu_seconds() - used
    connection.disconnect()
    return elapsed, used


def bare_sqs(sqs: Sqs, count: int) -> tuple[float, float]:
    """Seconds for a bare boto3 loop (receive 10, parse, delete each) to take *count* messages, and its CPU seconds."""
    import boto3

    client = boto3.client("sqs", endpoint_url=sqs.endpoint, region_name=AWS_ENV["AWS_DEFAULT_REGION"])
    started, used = time.perf_counter(), cpu_seconds()
    taken = 0
    while taken < count:
        for message in client.receive_message(QueueUrl=sqs.url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            orjson.loads(message["Body"])
            client.delete_message(QueueUrl=sqs.url, ReceiptHandle=message["ReceiptHandle"])
            taken += 1
    return time.perf_counter() - started, cpu_seconds() - used


class _Held:
    """A transport whose messages are handed to ``handle_many`` directly: no receive, acknowledgements dropped."""

    name = "stomp"
    description = "messages in memory"
    keep_alive_interval = None
    lingers = False

    def ack_many(self, messages: list[Any]) -> None:
        pass

    def retry(self, message: Any, delay: float) -> None:
        pass

    def dead_letter(self, message: Any, reason: str) -> str:
        return "dropped"


def in_memory(count: int, warmup: int) -> None:
    """``handle_many`` on batches of 8 of *count* messages after *warmup* more: the CPU time a message."""
    import functools

    from flask import Flask

    from webhook_receiver.transports.consumer import Message

    receiver = WebhookReceiver(secret_key="b" * 32)
    receiver.on("order.paid")(lambda event: None)
    app = Flask(__name__, instance_path=tempfile.mkdtemp(prefix="whr-bench-"))
    app.config["WEBHOOK_RECEIVER_STORE"] = "sqlite:///events.sqlite3" if OPTIONS["store"] == "sqlite" else "memory://"
    receiver.init_app(app)
    consumer = receiver.consumer(app, f"stomp://{USER}:{PASSWORD}@{STOMP_HOST}:{STOMP_PORT}/queue/unused")
    consumer.transport = _Held()
    messages = [Message(body, str(number)) for number, body in enumerate(bodies(warmup + count))]
    batches = [messages[start : start + 8] for start in range(0, len(messages), 8)]
    for batch in batches[: warmup // 8]:
        consumer.handle_many(batch)
    used = cpu_seconds()
    for batch in batches[warmup // 8 :]:  # callgrind counts inside functools.reduce only
        functools.reduce(lambda _, __, batch=batch: consumer.handle_many(batch), [0], None)  # type: ignore[misc]
    used = cpu_seconds() - used
    assert consumer.stats.outcomes == {"processed": warmup // 8 * 8 + count}, consumer.stats
    print(f"in memory: {used / count * 1e6:.1f} us CPU a message ({OPTIONS['store']} store, batches of 8)", flush=True)


def count_in_memory(count: int, warmup: int) -> None:
    """:func:`in_memory` in a child under callgrind: instructions a message."""
    out = tempfile.NamedTemporaryFile(prefix="whr-callgrind-consume-", suffix=".out", delete=False)
    out.close()
    try:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce"]
            + [f"--callgrind-out-file={out.name}", sys.executable, __file__, "--in-memory-child"]
            + ["--messages", str(count), "--warmup", str(warmup), "--store", OPTIONS["store"]],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"the consumer failed under valgrind:\n{done.stderr[-2000:]}")
        summary = [line for line in Path(out.name).read_text().splitlines() if line.startswith("summary:")]
        instructions = int(summary[0].split()[1])
        store = OPTIONS["store"]
        print(f"in memory: {instructions / count:,.0f} instructions a message under callgrind ({store} store)")
    finally:
        os.unlink(out.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["stomp", "sqs"], default="stomp")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="consume's --concurrency")
    parser.add_argument("--prefetch", type=int, default=None, help="the prefetch of both (consume's default)")
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument(
        "--dispatch",
        choices=["inline", "thread"],
        default="inline",
        help="thread: acknowledged once stored pending, the handlers left to other processes (consume --no-work)",
    )
    parser.add_argument("--in-memory", action="store_true", help="no broker: handle_many's own CPU and instructions")
    parser.add_argument("--warmup", type=int, default=800, help="with --in-memory: messages handled before counting")
    parser.add_argument("--in-memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    OPTIONS.update(store=args.store, dispatch=args.dispatch, prefetch=args.prefetch)
    if args.in_memory_child or args.in_memory:
        logging.basicConfig(level=logging.WARNING)
        in_memory(args.messages, args.warmup)
        if args.in_memory:
            count_in_memory(args.messages, args.warmup)
        return
    prefetch = args.prefetch or default_prefetch(args.concurrency)
    logging.basicConfig(level=logging.WARNING)

    kinds = ["bare", "receiver", "durable"] if args.transport == "stomp" else ["bare", "receiver"]
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    server: Any = None
    if args.transport == "sqs":
        os.environ.update(AWS_ENV)
        server, endpoint = moto_server()
    try:
        for round_ in range(args.rounds):
            for which in kinds[round_ % len(kinds) :] + kinds[: round_ % len(kinds)]:  # each goes first in turn
                if args.transport == "stomp":
                    rabbit = Rabbit()
                    rabbit.declare()
                    rabbit.publish(bodies(args.messages))
                    try:
                        if which != "receiver":
                            seconds, used = bare_stomp(rabbit, args.messages, prefetch, which == "durable")
                        else:
                            seconds, used = receiver_consumer(rabbit.url, args.messages, args.concurrency)
                    finally:
                        rabbit.delete()
                else:
                    sqs = Sqs(endpoint)
                    sqs.publish(bodies(args.messages))
                    if which == "bare":
                        seconds, used = bare_sqs(sqs, args.messages)
                    else:
                        seconds, used = receiver_consumer(f"{sqs.url}?wait=1", args.messages, args.concurrency)
                rate = args.messages / seconds
                per_message = used / args.messages * 1e6
                results[which].append(rate)
                cpu[which].append(per_message)
                print(
                    f"round {round_ + 1} {which:8s} {rate:8.0f} messages/s {per_message:7.0f} us CPU a message",
                    flush=True,
                )
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    receiver, bare = statistics.median(results["receiver"]), statistics.median(results["bare"])
    receiver_cpu, bare_cpu = statistics.median(cpu["receiver"]), statistics.median(cpu["bare"])
    print(
        f"{args.transport}: consume {receiver:.0f}/s, bare {bare:.0f}/s, ratio {receiver / bare:.2f}"
        f" (medians of {args.rounds} rounds of {args.messages} messages, concurrency {args.concurrency},"
        f" prefetch {prefetch}, {args.store} store, {args.dispatch} dispatch)"
    )
    print(
        f"{args.transport}: CPU a message: consume {receiver_cpu:.0f} us, bare {bare_cpu:.0f} us,"
        f" ratio {bare_cpu / receiver_cpu:.2f} (bare / consume; this process only: the broker's is not in it)"
    )
    if "durable" in results:
        durable, durable_cpu = statistics.median(results["durable"]), statistics.median(cpu["durable"])
        print(
            f"{args.transport}: the durable floor (bare, plus the SQLite floor's two writes a message)"
            f" {durable:.0f}/s, {durable_cpu:.0f} us CPU a message: consume / durable floor {receiver / durable:.2f},"
            f" durable floor / bare {durable / bare:.2f}"
        )


if __name__ == "__main__":
    main()
