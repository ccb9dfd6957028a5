"""Registering queue integrations and the emulator's deliveries to them, end to end over the real queues.

``flask webhooks sync --stomp`` / ``--sqs`` registers ``stomp`` / ``aws_sqs``
integrations on the emulator; the emulator puts each fired event on
RabbitMQ's STOMP destination or moto's SQS queue as a CloudEvent; a consumer
takes it into the handlers; ``flask webhooks events`` shows it with its
transport. The credentials never show in any output, log line or repr.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.cli import webhooks_cli
from webhook_receiver.local.emulator import Emulator

from .conftest import SECRET, new_app
from .queues import STOMP_HOST, STOMP_PORT, Rabbit, Sqs, consume, moto_endpoint_fixture, rabbit_fixture  # noqa: F401

#: The keys the emulator sends to SQS with (moto takes any); never shown.
SEND_KEY_ID = "AKIAEMULATORSEND0042"
SEND_SECRET = "emulator-send-secret-" + secrets.token_hex(8)


@pytest.fixture
def broker_user() -> Iterator[tuple[str, str]]:
    """A RabbitMQ user of the test's own with a password no other text holds, deleted afterwards."""
    user, password = f"whr-test-{uuid.uuid4().hex[:8]}", "stomp-pw-" + secrets.token_hex(10)
    subprocess.run(["rabbitmqctl", "add_user", user, password], check=True, capture_output=True)
    try:
        subprocess.run(
            ["rabbitmqctl", "set_permissions", "-p", "/", user, ".*", ".*", ".*"], check=True, capture_output=True
        )
        yield user, password
    finally:
        subprocess.run(["rabbitmqctl", "delete_user", user], capture_output=True)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_app(receiver: WebhookReceiver, tmp_path: Path, moltin: Emulator, **config: Any) -> Flask:
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=f"sqlite:////{tmp_path}/events.sqlite3",
        EPCC_CLIENT_ID=moltin.client_id,
        EPCC_CLIENT_SECRET=moltin.client_secret,
        EPCC_API_BASE_URL=moltin.url,
        **config,
    )
    receiver.init_app(app)
    return app


def invoke(runner: FlaskCliRunner, *args: str) -> str:
    result = runner.invoke(webhooks_cli, list(args))
    assert result.exit_code == 0, result.output
    return str(result.output)


def receiving() -> tuple[WebhookReceiver, list[Event]]:
    receiver = WebhookReceiver()
    seen: list[Event] = []
    receiver.on("order.paid", "cart.updated")(seen.append)
    more = ("product.deleted", "customer.created", "order.fulfilled", "order.created")
    receiver.on(*more, name="more")(lambda event: None)
    return receiver, seen


def test_stomp_sync_emulator_broker_consumer_round_trip(
    rabbit: Rabbit,  # noqa: F811
    broker_user: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user, password = broker_user
    receiver, seen = receiving()
    caplog.set_level(logging.DEBUG)  # every logger, stomp.py's frames too
    with Emulator(retry_delays=(0.05, 0.1)) as moltin:
        app = make_app(receiver, tmp_path, moltin)
        runner = app.test_cli_runner()
        # The standby address first: it is closed, so the emulator fails over to the active one.
        standby = f"stomp://127.0.0.1:{closed_port()}/queue/{rabbit.name}"
        active = f"stomp://{user}:{password}@{STOMP_HOST}:{STOMP_PORT}/queue/{rabbit.name}"
        created = invoke(runner, "sync", "--stomp", standby, "--stomp", active)
        assert created.count("created integration") == 2, created  # six events: five, then one
        stomp = [i for i in moltin.state.integrations.values() if i["integration_type"] == "stomp"]
        assert len(stomp) == 2 and all(len(i["observes"]) <= 5 for i in stomp)
        configuration = stomp[0]["configuration"]
        assert configuration["username"] == user and configuration["password"] == password
        assert configuration["destination"] == f"/queue/{rabbit.name}"
        assert configuration["addresses"] == [standby.split("/queue")[0], f"stomp://{STOMP_HOST}:{STOMP_PORT}"]

        # The password from the environment instead of the URL: the same integrations, nothing to write.
        monkeypatch.setenv("WEBHOOK_RECEIVER_STOMP_PASSWORD", password)
        bare = f"stomp://{user}@{STOMP_HOST}:{STOMP_PORT}/queue/{rabbit.name}"
        again = invoke(runner, "sync", "--stomp", standby, "--stomp", bare)
        assert again.count("unchanged integration") == 2, again
        listed = invoke(runner, "list")
        assert listed.count("  stomp  enabled  ") == 2 and f"/queue/{rabbit.name} on stomp://127.0.0.1:" in listed

        fired = moltin.fire("order.paid")
        moltin.wait_idle()
        assert rabbit.count() == 1
        logs = moltin.logs()
        assert [log["succeeded"] for log in logs] == [True], logs
        integration = logs[0]["relationships"]["integration"]["data"]["id"]
        assert [job["id"] for job in moltin.state.jobs[integration]] == [logs[0]["relationships"]["job"]["data"]["id"]]

        consumer = receiver.consumer(app, bare)
        consume(consumer, lambda stats: stats.acked >= 1)
        assert [event.id for event in seen] == [fired.event_id]
        event = seen[0]
        assert event.trigger == "order.paid" and event.transport == "stomp"
        assert event.store_id == moltin.state.store_id and event.integration["id"] == integration
        assert receiver.get_store(app).get(fired.event_id).status.value == "processed"  # type: ignore[union-attr]
        events = invoke(runner, "events")
        row = next(line for line in events.splitlines() if fired.event_id in line)
        assert "order.paid" in row and "processed" in row and "stomp" in row
        assert json.loads(invoke(runner, "events", "--json"))[0]["transport"] == "stomp"

        # A broker that refuses the credentials: each attempt logged as failed, with why.
        moltin.state.integrations[integration]["configuration"] = {**configuration, "password": password + "-wrong"}
        moltin.fire("order.paid")
        moltin.wait_idle()
        failed = moltin.logs()[1:]
        assert len(failed) == 3 and not any(log["succeeded"] for log in failed)
        assert all("could not connect to the broker" in str(log["error_detail"]) for log in failed), failed

        shown = [
            created,
            again,
            listed,
            invoke(runner, "list", "--json"),
            invoke(runner, "logs"),
            events,
            invoke(runner, "sync", "--help"),
            json.dumps(moltin.logs()),
            repr(consumer),
            repr(consumer.transport) if hasattr(consumer, "transport") else "",
            caplog.text,
        ]
        for text in shown:
            assert password not in text


def test_sqs_sync_emulator_queue_consumer_round_trip(
    moto_endpoint: str,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sqs = Sqs(moto_endpoint, visibility=30, max_receives=5)
    receiver, seen = receiving()
    caplog.set_level(logging.DEBUG)
    with Emulator(retry_delays=(0.05, 0.1), sqs_endpoint_url=moto_endpoint) as moltin:
        app = make_app(receiver, tmp_path, moltin, AWS_ACCESS_KEY_ID=SEND_KEY_ID, AWS_SECRET_ACCESS_KEY=SEND_SECRET)
        runner = app.test_cli_runner()
        created = invoke(runner, "sync", "--sqs", sqs.url, "--region", "eu-west-1")
        assert created.count("created integration") == 2, created
        queues = [i for i in moltin.state.integrations.values() if i["integration_type"] == "aws_sqs"]
        assert {i["name"] for i in queues} == {"webhook_receiver-moltin-sqs", "webhook_receiver-moltin-sqs-2"}
        assert queues[0]["configuration"] == {
            "url": sqs.url,
            "aws_access_key_id": SEND_KEY_ID,
            "aws_secret_access_key": SEND_SECRET,
            "region": "eu-west-1",
        }
        assert invoke(runner, "sync", "--sqs", sqs.url, "--region", "eu-west-1").count("unchanged") == 2
        listed = invoke(runner, "list")
        assert listed.count("  aws_sqs  enabled  ") == 2

        small = moltin.fire("order.paid")
        big = moltin.fire(
            "cart.updated",
            {"id": "cart-1", "type": "cart", "name": "Cart"},
            included={"items": [{"id": f"item-{n}", "type": "cart_item", "note": "x" * 1000} for n in range(300)]},
        )
        moltin.wait_idle()
        assert [log["succeeded"] for log in moltin.logs()] == [True, True]
        assert {log["status_code"] for log in moltin.logs()} == {200}

        consumer = receiver.consumer(app, f"{sqs.url}?wait=1")
        consume(consumer, lambda stats: stats.acked >= 2)
        by_id = {event.id: event for event in seen}
        assert set(by_id) == {small.event_id, big.event_id}
        assert by_id[big.event_id].includes_elided and not by_id[small.event_id].includes_elided
        assert by_id[big.event_id].data["id"] == "cart-1"  # the resource itself, not {data, included}
        assert {event.transport for event in seen} == {"sqs"}
        assert sqs.count() == 0
        events = invoke(runner, "events")
        for event_id in by_id:
            row = next(line for line in events.splitlines() if event_id in line)
            assert "processed" in row and "sqs" in row

        # An endpoint that cannot be reached: each attempt logged as failed, with why.
        moltin.firer.sqs_endpoint_url = f"http://127.0.0.1:{closed_port()}"
        moltin.fire("order.paid")
        moltin.wait_idle()
        failed = moltin.logs()[2:]
        assert len(failed) == 3 and not any(log["succeeded"] for log in failed)
        assert all("could not reach SQS" in str(log["error_detail"]) for log in failed), failed

        shown = [
            created,
            listed,
            invoke(runner, "list", "--json"),
            invoke(runner, "logs"),
            events,
            invoke(runner, "sync", "--help"),
            json.dumps(moltin.logs()),
            repr(consumer),
        ]
        for text in shown:
            assert SEND_SECRET not in text and SEND_KEY_ID not in text
        assert SEND_SECRET not in caplog.text  # botocore's DEBUG lines hold the key id (signed headers), never this


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--stomp", "stomp://127.0.0.1:61613/queue/epcc-x"], {}, "needs the broker's user name and password"),
        (["--stomp", "stomp://u:p@127.0.0.1:61613"], {}, "the URL has no destination"),
        (["--stomp", "http://u:p@127.0.0.1/queue/x"], {}, "a STOMP URL starts with stomp://"),
        (["--sqs", "https://sqs.eu-west-1.amazonaws.com/1234/orders"], {}, "named epcc* only"),
        (["--sqs", "http://127.0.0.1:9/1234/epcc-orders"], {}, "give the queue's region"),
        (["--sqs", "https://sqs.eu-west-1.amazonaws.com/1234/epcc-orders"], {}, "set AWS_ACCESS_KEY_ID"),
        (["--sqs", "https://sqs.eu-west-1.amazonaws.com/1/epcc-o", "--url", "https://x/webhooks/moltin"], {}, "one of"),
        (["--region", "eu-west-1", "--url", "https://x/webhooks/moltin"], {}, "--region is the SQS queue's"),
        (["--stomp", "stomp://u:p@127.0.0.1:61613/queue/epcc-x", "--force"], {}, "give it with --url only"),
        # each of these was registered as given: a region of the wrong shape or of another host, a query dropped,
        # a virtual host upstream cannot take, a second login silently left out
        (["--sqs", "http://127.0.0.1:9/1/epcc-o", "--region", "eu wset 1"], {}, "not an AWS region"),
        (["--sqs", "https://sqs.eu-west-1.amazonaws.com/1/epcc-o", "--region", "eu-wset-1"], {}, "not the queue URL's"),
        (["--sqs", "https://sqs.eu-west-1.amazonaws.com/1/epcc-o", "--region", "us-east-1"], {}, "not the queue URL's"),
        (["--sqs", "https://sqs.eu-west-1.amazonaws.com/1/epcc-o?wiat=5"], {}, "unknown parameter 'wiat'"),
        (["--stomp", "stomp://u:p@127.0.0.1:61613/queue/epcc-x?vhost=shop"], {}, "no virtual host setting"),
        (
            ["--stomp", "stomp://u:p@127.0.0.1:61613/queue/epcc-x", "--stomp", "stomp://v:q@127.0.0.2:61613"],
            {},
            "different user names or passwords",
        ),
        (["--stomp", "stomp://u:p@127.0.0.1:61613/queue/epcc%0AERROR"], {}, "destination holds a control character"),
    ],
)
def test_sync_refuses_incomplete_queue_registrations_without_quoting_secrets(
    args: list[str], env: dict[str, str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WEBHOOK_RECEIVER_STOMP_USERNAME", "WEBHOOK_RECEIVER_STOMP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    receiver, _ = receiving()
    with Emulator() as moltin:
        app = make_app(receiver, tmp_path, moltin)
        result = app.test_cli_runner().invoke(webhooks_cli, ["sync", *args])
        assert result.exit_code != 0 and message in result.output, result.output
        assert "u:p@" not in result.output and moltin.state.integrations == {}


def test_queue_groups_follow_a_new_password_and_keep_apart_from_webhooks(
    moltin: Emulator, receiver: WebhookReceiver
) -> None:
    from webhook_receiver.upstream.client import MoltinClient
    from webhook_receiver.upstream.sync import sync_integration, sync_target
    from webhook_receiver.upstream.targets import sqs_target, stomp_target

    receiver.on("order.paid", "cart.updated")(lambda event: None)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)
    client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url, backoff=0.01)
    with app.app_context():
        sync_integration(client, receiver, "https://shop.example/webhooks/moltin")
    first = stomp_target(["stomp+ssl://epcc:first-pw@b-1.mq.example:61614/queue/epcc-orders"])
    assert sync_target(client, receiver, first).action == "created"
    queue = sqs_target(
        "https://sqs.eu-west-1.amazonaws.com/123456789012/epcc-orders", access_key_id="AKIA1", secret_access_key="s1"
    )
    assert queue.configuration["region"] == "eu-west-1"  # read from the queue's URL
    assert sync_target(client, receiver, queue).action == "created"
    kinds = sorted((i["name"], i["integration_type"]) for i in moltin.state.integrations.values())
    assert kinds == [
        ("webhook_receiver-moltin", "webhook"),
        ("webhook_receiver-moltin-sqs", "aws_sqs"),
        ("webhook_receiver-moltin-stomp", "stomp"),
    ]

    # Upstream hides the password: the fingerprint in the description tells that it changed.
    stomp_id = next(i["id"] for i in moltin.state.integrations.values() if i["integration_type"] == "stomp")
    del moltin.state.integrations[stomp_id]["configuration"]["password"]
    second = stomp_target(["stomp+ssl://epcc:second-pw@b-1.mq.example:61614/queue/epcc-orders"])
    changed = sync_target(client, receiver, second)
    assert changed.action == "updated" and "description" in changed.changes
    assert moltin.state.integrations[stomp_id]["configuration"]["password"] == "second-pw"
    assert "second-pw" not in str(changed) + repr(second) and "first-pw" not in str(changed)
    assert sync_target(client, receiver, second).action == "unchanged"
    # The description is readable by anyone with API access: its fingerprint is keyed with the client secret, so
    # a guess of a password a person chose cannot be checked against it (it was an unkeyed hash of the password).
    from webhook_receiver.upstream.sync import secret_fingerprint

    description = moltin.state.integrations[stomp_id]["description"]
    assert secret_fingerprint("second-pw") not in description
    assert secret_fingerprint("second-pw", client.fingerprint_key()) in description
    # A failover pair's second address joins the same integration.
    pair = stomp_target([*second_urls()])
    assert sync_target(client, receiver, pair).action == "updated"
    assert moltin.state.integrations[stomp_id]["configuration"]["addresses"] == [
        "stomp+ssl://b-1.mq.example:61614",
        "stomp+ssl://b-2.mq.example:61614",
    ]
    with app.app_context():  # the webhook group is untouched by the queue groups
        assert sync_integration(client, receiver, "https://shop.example/webhooks/moltin").action == "unchanged"


def second_urls() -> list[str]:
    return [
        "stomp+ssl://epcc:second-pw@b-1.mq.example:61614/queue/epcc-orders",
        "stomp+ssl://b-2.mq.example:61614",
    ]


def test_list_hides_a_password_someone_put_in_an_address(moltin: Emulator, tmp_path: Path) -> None:
    receiver, _ = receiving()
    app = make_app(receiver, tmp_path, moltin)
    moltin.state.new_integration(
        {
            "name": "by-hand",
            "integration_type": "stomp",
            "observes": ["order.paid"],
            "configuration": {
                "username": "epcc",
                "password": "hand-pw-1",
                "destination": "/queue/epcc-orders",
                "addresses": ["stomp+ssl://epcc:hand-pw-2@b-1.mq.example:61614"],
            },
        },
        moltin.url,
    )
    runner = app.test_cli_runner()
    listed = invoke(runner, "list") + invoke(runner, "list", "--json")
    assert "/queue/epcc-orders on stomp+ssl://epcc:***@b-1.mq.example:61614" in listed
    assert "hand-pw-1" not in listed and "hand-pw-2" not in listed


def test_delete_by_name_takes_a_queue_group_whole(moltin: Emulator, tmp_path: Path) -> None:
    receiver, _ = receiving()
    app = make_app(receiver, tmp_path, moltin)
    runner = app.test_cli_runner()
    invoke(runner, "sync", "--url", "https://shop.example/webhooks/moltin")
    created = invoke(runner, "sync", "--stomp", "stomp+ssl://epcc:pw-3@b-1.mq.example:61614/queue/epcc-orders")
    assert created.count("created integration") == 2
    deleted = invoke(runner, "delete", "--name", "webhook_receiver-moltin-stomp")
    assert deleted.count("deleted integration") == 2, deleted
    left = sorted((i["name"], i["integration_type"]) for i in moltin.state.integrations.values())
    assert left == [("webhook_receiver-moltin", "webhook"), ("webhook_receiver-moltin-2", "webhook")]


def test_a_destination_with_no_known_prefix_is_registered_and_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    from webhook_receiver.upstream.targets import stomp_target

    with caplog.at_level(logging.WARNING, logger="webhook_receiver"):
        target = stomp_target(["stomp://u:p@127.0.0.1:61613/quuee/epcc-x"])  # taken silently before
    assert target.configuration["destination"] == "/quuee/epcc-x"
    assert "the destination /quuee/epcc-x starts with none of /queue/" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="webhook_receiver"):
        stomp_target(["stomp://u:p@127.0.0.1:61613/queue/epcc-x"])
    assert caplog.text == ""


def test_a_second_address_may_leave_its_password_to_the_first() -> None:
    from webhook_receiver.upstream.targets import stomp_target

    target = stomp_target(["stomp://u:p@127.0.0.1:61613/queue/epcc-x", "stomp://u@127.0.0.2:61613"])
    assert target.configuration["addresses"] == ["stomp://127.0.0.1:61613", "stomp://127.0.0.2:61613"]
    assert (target.configuration["username"], target.configuration["password"]) == ("u", "p")
    later = stomp_target(["stomp://u@127.0.0.1:61613/queue/epcc-x", "stomp://u:p@127.0.0.2:61613"])
    assert later.configuration["password"] == "p"
