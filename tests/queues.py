"""The real queues of the queue tests: RabbitMQ's STOMP plugin on the machine, and moto's SQS server.

RabbitMQ: each test gets queues of its own (``whr-test-<hex>``), declared over
AMQP as STOMP's ``/queue/NAME`` expects them (durable, no arguments), with a
dead-letter queue ``<name>.dead`` set by a policy, and deleted afterwards.
SQS: one moto server per test session on a free port of 127.0.0.1, a queue of
each test's own with a redrive policy to its dead-letter queue.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import uuid
from typing import Any, Callable, Iterable, Iterator

import pytest

from webhook_receiver.transports import Consumer, ConsumerStats

STOMP_HOST = "127.0.0.1"
STOMP_PORT = int(os.environ.get("WEBHOOK_RECEIVER_TEST_STOMP_PORT", "61613"))
AMQP_HOST = "127.0.0.1:5672"
USER, PASSWORD = "guest", "guest"


def cloudevent(event_id: str, trigger: str = "order.paid", **extra: Any) -> bytes:
    """An Elastic Path CloudEvent as upstream puts it on a queue."""
    body = {
        "specversion": "1.0",
        "id": event_id,
        "type": trigger,
        "source": "https://epcc-integration.global.ssl.fastly.net",
        "datacontenttype": "application/json",
        "integrationid": "e17db0d8-467b-4bf3-9c26-3dfe8b96e9d7",
        "storeid": "b33e328f-31a8-4d57-b0a3-ebf1039b3756",
        "data": {"id": f"order-{event_id}", "type": "order", "status": "complete"},
        **extra,
    }
    return json.dumps(body).encode()


def require_stomp() -> None:
    """Skip when RabbitMQ's STOMP port is closed, unless CI=true, where that is a failure (.ci/run opens it)."""
    try:
        socket.create_connection((STOMP_HOST, STOMP_PORT), timeout=1).close()
    except OSError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"RabbitMQ's STOMP plugin is not listening on {STOMP_PORT}: {exc}")
        pytest.skip(
            f"RabbitMQ's STOMP plugin is not listening on {STOMP_PORT} (rabbitmq-plugins enable rabbitmq_stomp)"
        )


class Rabbit:
    """A queue of the test's own on the machine's RabbitMQ, with a dead-letter queue."""

    def __init__(self) -> None:
        self.name = f"whr-test-{uuid.uuid4().hex[:10]}"
        self.dead = f"{self.name}.dead"
        self.policy = f"{self.name}-dlx"

    @property
    def url(self) -> str:
        return f"stomp://{USER}:{PASSWORD}@{STOMP_HOST}:{STOMP_PORT}/queue/{self.name}"

    def _channel(self) -> Any:
        import amqp

        connection = amqp.Connection(host=AMQP_HOST, userid=USER, password=PASSWORD)
        connection.connect()
        return connection, connection.channel()

    def declare(self) -> None:
        connection, channel = self._channel()
        try:
            for name in (self.name, self.dead):
                channel.queue_declare(name, durable=True, auto_delete=False)
        finally:
            connection.close()
        policy = json.dumps({"dead-letter-exchange": "", "dead-letter-routing-key": self.dead})
        subprocess.run(
            ["rabbitmqctl", "set_policy", "--apply-to", "queues", self.policy, f"^{self.name}$", policy],
            check=True,
            capture_output=True,
        )

    def count(self, name: str | None = None) -> int:
        """Messages ready on a queue (those not acknowledged by a closed connection are ready again)."""
        connection, channel = self._channel()
        try:
            _, count, _ = channel.queue_declare(name or self.name, passive=True)
            return int(count)
        finally:
            connection.close()

    def consumers(self) -> int:
        connection, channel = self._channel()
        try:
            _, _, consumers = channel.queue_declare(self.name, passive=True)
            return int(consumers)
        finally:
            connection.close()

    def take_all(self, name: str) -> list[bytes]:
        """Every message on queue *name*, taken off it."""
        connection, channel = self._channel()
        bodies = []
        try:
            while True:
                message = channel.basic_get(name, no_ack=True)
                if message is None:
                    return bodies
                body = message.body
                bodies.append(body if isinstance(body, bytes) else body.encode())
        finally:
            connection.close()

    def publish(self, bodies: Iterable[bytes]) -> None:
        """Send each body to the queue over STOMP, persistent, and wait for the broker's receipt of the last."""
        import stomp

        connection = stomp.Connection12([(STOMP_HOST, STOMP_PORT)], vhost="/", auto_decode=False)
        connection.connect(USER, PASSWORD, wait=True)
        try:
            for body in bodies:
                connection.send(f"/queue/{self.name}", body, headers={"persistent": "true"})
        finally:
            connection.disconnect()  # with a receipt: what was sent is taken

    def delete(self) -> None:
        subprocess.run(["rabbitmqctl", "clear_policy", self.policy], capture_output=True)
        connection, channel = self._channel()
        try:
            for name in (self.name, self.dead):
                channel.queue_delete(name)
        finally:
            connection.close()


@pytest.fixture(name="rabbit")
def rabbit_fixture() -> Iterator[Rabbit]:
    require_stomp()
    queue = Rabbit()
    queue.declare()
    yield queue
    queue.delete()


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIATESTQUEUES000001",
    "AWS_SECRET_ACCESS_KEY": "sqs-secret-key-never-shown-4e1f",
    "AWS_DEFAULT_REGION": "eu-west-1",
}


@pytest.fixture(scope="session", name="moto_endpoint")
def moto_endpoint_fixture() -> Iterator[str]:
    """moto's threaded SQS server on a free port of 127.0.0.1, for the session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
    saved = {key: os.environ.get(key) for key in AWS_ENV}
    os.environ.update(AWS_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class Sqs:
    """A queue of the test's own on moto, with a redrive policy to a dead-letter queue."""

    def __init__(self, endpoint: str, *, visibility: int = 30, max_receives: int = 2, redrive: bool = True) -> None:
        import boto3

        self.endpoint = endpoint
        self.client = boto3.client("sqs", endpoint_url=endpoint, region_name=AWS_ENV["AWS_DEFAULT_REGION"])
        name = f"epcc-whr-test-{uuid.uuid4().hex[:10]}"
        self.dead_url = self.client.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
        dead_arn = self.client.get_queue_attributes(QueueUrl=self.dead_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        attributes = {"VisibilityTimeout": str(visibility)}
        if redrive:
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(max_receives)}
            )
        self.url = self.client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]

    def publish(self, bodies: Iterable[bytes]) -> None:
        batch: list[dict[str, str]] = []
        for body in bodies:
            batch.append({"Id": str(len(batch)), "MessageBody": body.decode()})
            if len(batch) == 10:
                self.client.send_message_batch(QueueUrl=self.url, Entries=batch)
                batch = []
        if batch:
            self.client.send_message_batch(QueueUrl=self.url, Entries=batch)

    def count(self, url: str | None = None) -> int:
        """Messages on a queue, visible or not (moto counts exactly)."""
        found = self.client.get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(found["ApproximateNumberOfMessages"]) + int(found["ApproximateNumberOfMessagesNotVisible"])

    def take_all(self, url: str) -> list[bytes]:
        bodies = []
        while True:
            found = self.client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = found.get("Messages", [])
            if not messages:
                return bodies
            for message in messages:
                bodies.append(message["Body"].encode())
                self.client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def consume(consumer: Consumer, until: Callable[[ConsumerStats], bool], timeout: float = 90) -> None:
    """Run *consumer* in a thread until *until* holds; fail (not hang) if it never does."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run(until=until)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        consumer.stop()
        thread.join(30)
        raise AssertionError(f"the consumer did not get there in {timeout:g} s: {consumer.stats}")
    assert not errors, errors
