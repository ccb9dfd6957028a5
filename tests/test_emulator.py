"""The Moltin stand-in: upstream's envelopes and errors, and real deliveries with retries."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.local.emulator import Emulator
from webhook_receiver.upstream.client import MoltinClient

from .conftest import SECRET, new_app


def token(moltin: Emulator, **form: str) -> requests.Response:
    data = {
        "grant_type": "client_credentials",
        "client_id": moltin.client_id,
        "client_secret": moltin.client_secret,
        **form,
    }
    return requests.post(f"{moltin.url}/oauth/access_token", data=data, timeout=5)


def auth(moltin: Emulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(moltin).json()['access_token']}"}


def test_token_endpoint(moltin: Emulator) -> None:
    answer = token(moltin)
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["identifier"] == "client_credentials" and body["expires"] > 0
    refused = token(moltin, client_secret="nope")
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["status"] == 401
    assert token(moltin, grant_type="password").status_code == 422


def test_implicit_tokens_are_refused_by_integrations(moltin: Emulator) -> None:
    implicit = requests.post(
        f"{moltin.url}/oauth/access_token", timeout=5, data={"grant_type": "implicit", "client_id": moltin.client_id}
    ).json()
    answer = requests.get(
        f"{moltin.url}/v2/integrations", timeout=5, headers={"Authorization": f"Bearer {implicit['access_token']}"}
    )
    assert answer.status_code == 403


@pytest.mark.parametrize(
    ("headers", "status"), [({}, 401), ({"Authorization": "Bearer nope"}, 401), ({"Authorization": "Basic abc"}, 401)]
)
def test_missing_or_bad_token(moltin: Emulator, headers: dict[str, str], status: int) -> None:
    answer = requests.get(f"{moltin.url}/v2/integrations", headers=headers, timeout=5)
    assert answer.status_code == status
    assert answer.json() == {
        "errors": [{"status": 401, "title": "Unauthorized", "detail": "a valid Bearer access token is required"}]
    }


def test_expired_token(moltin: Emulator) -> None:
    headers = auth(moltin)
    moltin.state.expire_tokens()
    assert requests.get(f"{moltin.url}/v2/integrations", headers=headers, timeout=5).status_code == 401


VALID = {
    "type": "integration",
    "name": "n",
    "description": "d",
    "integration_type": "webhook",
    "observes": ["order.paid"],
    "configuration": {"url": "http://127.0.0.1:9/"},
}


@pytest.mark.parametrize(
    ("body", "status", "pointer"),
    [
        (b"{not json", 400, None),
        (json.dumps({"nodata": {}}).encode(), 422, "data"),
        (json.dumps({"data": []}).encode(), 422, "data"),
        (json.dumps({"data": {**VALID, "type": "product"}}).encode(), 422, "data.type"),
        (json.dumps({"data": {k: v for k, v in VALID.items() if k != "observes"}}).encode(), 422, "data.observes"),
        (json.dumps({"data": {**VALID, "observes": []}}).encode(), 422, "data.observes"),
        (json.dumps({"data": {**VALID, "integration_type": "email"}}).encode(), 422, "data.integration_type"),
        (json.dumps({"data": {**VALID, "configuration": {}}}).encode(), 422, "data.configuration.url"),
        (json.dumps({"data": {**VALID, "enabled": "yes"}}).encode(), 422, "data.enabled"),
    ],
)
def test_create_validation(moltin: Emulator, body: bytes, status: int, pointer: str | None) -> None:
    answer = requests.post(f"{moltin.url}/v2/integrations", data=body, headers=auth(moltin), timeout=5)
    assert answer.status_code == status
    error = answer.json()["errors"][0]
    assert error["status"] == status and error["title"]
    if pointer:
        assert error["source"] == {"pointer": pointer}
    assert moltin.state.integrations == {}


def test_unknown_integration_is_404(moltin: Emulator) -> None:
    headers = auth(moltin)
    for method in ("GET", "PUT", "DELETE"):
        answer = requests.request(
            method,
            f"{moltin.url}/v2/integrations/nope",
            headers=headers,
            timeout=5,
            json={"data": {"type": "integration", "name": "x"}},
        )
        assert answer.status_code == 404, method
        assert answer.json()["errors"][0]["title"] == "Not Found"


def test_five_events_per_integration_and_only_known_ones(moltin_client: MoltinClient) -> None:
    from webhook_receiver.upstream.client import MoltinAPIError

    for n in range(7):  # any number of webhooks may observe one event
        moltin_client.create_integration(name=f"h{n}", url=f"http://127.0.0.1:9/{n}", observes=["order.paid"])
    six = ["order.paid", "order.created", "order.updated", "order.fulfilled", "order.refunded", "order.cancelled"]
    with pytest.raises(MoltinAPIError, match="only 5 events can be added to an integration") as info:
        moltin_client.create_integration(name="six", url="http://127.0.0.1:9/6", observes=six)
    assert info.value.status == 422 and info.value.errors[0]["source"] == {"pointer": "data.observes"}
    five = moltin_client.create_integration(name="five", url="http://127.0.0.1:9/5", observes=six[:5])
    with pytest.raises(MoltinAPIError, match="only 5 events"):
        moltin_client.update_integration(five["id"], observes=six)
    with pytest.raises(MoltinAPIError, match="integrations.created is not an observable event"):
        moltin_client.create_integration(name="bad", url="http://127.0.0.1:9/b", observes=["integrations.created"])
    moltin_client.create_integration(
        name="custom", url="http://127.0.0.1:9/c", observes=["wishlist_ext.created", "brand.created"]
    )


@pytest.fixture
def shop(live_server: Any) -> tuple[WebhookReceiver, list[Event], str]:
    receiver = WebhookReceiver(secret_key=SECRET)
    seen: list[Event] = []
    failures = {"n": 1}

    @receiver.on("order.paid", "product.deleted")
    def record(event: Event) -> None:
        seen.append(event)
        if event.trigger == "order.paid" and failures["n"] > 0:
            failures["n"] -= 1
            raise RuntimeError("flaky warehouse")

    app = new_app()
    receiver.init_app(app)
    return receiver, seen, live_server(app) + "/webhooks/moltin"


def test_fire_delivers_with_upstream_headers_and_retries(
    moltin: Emulator, moltin_client: MoltinClient, shop: tuple[WebhookReceiver, list[Event], str]
) -> None:
    receiver, seen, url = shop
    integration = moltin_client.create_integration(
        name="shop", url=url, secret_key=SECRET, observes=["order.paid", "product.deleted"]
    )
    moltin_client.create_integration(
        name="disabled", url=url, secret_key=SECRET, observes=["order.paid"], enabled=False
    )
    fired = moltin.fire("order.paid")
    assert len(fired.jobs) == 1
    assert moltin.wait_idle(10)
    assert [e.attempt for e in seen] == [1, 2], "the first attempt failed, the retry succeeded"
    event = seen[-1]
    assert event.id == fired.event_id and event.integration["id"] == integration["id"]
    assert isinstance(event.raw["resources"], str) and event.payload == event.resources
    assert event.raw["configuration"] == {"url": url, "secret_key": "[redacted]"}
    logs = moltin_client.integration_logs(integration["id"])
    assert [(log["attempt"], log["succeeded"], log["status_code"]) for log in logs] == [(2, True, 200), (1, False, 500)]
    assert json.loads(logs[0]["body"]) == {"id": fired.event_id, "status": "processed"}
    jobs = moltin_client.integration_jobs(integration["id"])
    assert [job["id"] for job in jobs] == fired.jobs
    assert len(moltin_client.job_logs(integration["id"], fired.jobs[0])) == 2
    assert len(moltin_client.integration_logs()) == 2

    moltin.fire("product.deleted", {"id": "p-1", "type": "product"})
    assert moltin.wait_idle(10)
    assert seen[-1].data == {"id": "p-1", "type": "product"} and seen[-1].is_deleted


def test_fire_gives_up_after_the_retries(moltin: Emulator, moltin_client: MoltinClient) -> None:
    integration = moltin_client.create_integration(name="gone", url="http://127.0.0.1:9/none", observes=["order.paid"])
    moltin.fire("order.paid")
    assert moltin.wait_idle(10)
    logs = moltin_client.integration_logs(integration["id"])
    assert [log["attempt"] for log in logs] == [4, 3, 2, 1]
    assert all(not log["succeeded"] and log["error_detail"] for log in logs)
    assert logs[0]["error_detail"] == (
        "could not deliver to http://127.0.0.1:9/none: connection refused; is your app running on 127.0.0.1:9?"
    )


def test_fire_says_why_nothing_was_delivered(moltin: Emulator, moltin_client: MoltinClient) -> None:
    fire = f"{moltin.url}/emulator/fire"
    nobody = requests.post(fire, json={"trigger": "order.paid"}, timeout=5).json()["data"]
    assert nobody["deliveries"] == 0 and nobody["reason"].startswith("no integration observes order.paid")
    moltin_client.create_integration(name="off", url="http://127.0.0.1:9/x", observes=["order.paid"], enabled=False)
    disabled = requests.post(fire, json={"trigger": "order.paid"}, timeout=5).json()["data"]
    assert disabled["reason"] == "every integration observing order.paid is disabled"
    refused = requests.post(fire, json={"trigger": "order paid!"}, timeout=5)
    assert refused.status_code == 422 and "'order paid!' is not an event name" in refused.text


def test_emulate_checks_its_port_before_its_banner_and_prints_a_line_to_paste() -> None:
    import shlex
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [sys.executable, "-m", "webhook_receiver.local.console", "emulate", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert busy.returncode == 1 and "Moltin emulator on" not in busy.stdout
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr and "try --port 0" in busy.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "webhook_receiver.local.console", "emulate", "--port", "0", "--client-secret", "a b'c"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        line = proc.stdout.readline().strip()
        assert line.startswith("export ")
        pasted = dict(word.split("=", 1) for word in shlex.split(line)[1:])
        assert pasted["EPCC_CLIENT_SECRET"] == "a b'c" and pasted["EPCC_API_BASE_URL"].startswith("http://127.0.0.1:")
        token = requests.post(
            pasted["EPCC_API_BASE_URL"] + "/oauth/access_token",
            data={
                "grant_type": "client_credentials",
                "client_id": pasted["EPCC_CLIENT_ID"],
                "client_secret": pasted["EPCC_CLIENT_SECRET"],
            },
            timeout=5,
        )
        assert token.status_code == 200
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert "POST /oauth/access_token" not in output, "no access log unless --access-log"


def test_fire_over_http(
    moltin: Emulator, moltin_client: MoltinClient, shop: tuple[WebhookReceiver, list[Event], str]
) -> None:
    _, seen, url = shop
    moltin_client.create_integration(name="shop", url=url, secret_key=SECRET, observes=["product.deleted"])
    answer = requests.post(
        f"{moltin.url}/emulator/fire",
        timeout=5,
        json={"trigger": "product.deleted", "data": {"id": "p-2", "type": "product"}},
    )
    assert answer.status_code == 202 and answer.json()["data"]["deliveries"] == 1
    assert moltin.wait_idle(10)
    assert [e.data["id"] for e in seen] == ["p-2"]
    assert requests.post(f"{moltin.url}/emulator/fire", json={}, timeout=5).status_code == 422


def test_a_slow_endpoint_times_out_and_is_retried(live_server: Any) -> None:
    import time

    receiver = WebhookReceiver(secret_key=SECRET)
    attempts: list[int] = []

    @receiver.on("order.paid")
    def slow(event: Event) -> None:
        attempts.append(event.attempt)
        if event.attempt == 1:
            time.sleep(1.0)  # longer than the emulator waits

    app = new_app()
    receiver.init_app(app)
    url = live_server(app) + "/webhooks/moltin"
    with Emulator(retry_delays=(0.05,), timeout=0.3) as moltin:
        client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url)
        integration = client.create_integration(name="slow", url=url, secret_key=SECRET, observes=["order.paid"])
        moltin.fire("order.paid")
        assert moltin.wait_idle(10)
        logs = client.integration_logs(integration["id"])
    assert [(log["attempt"], log["succeeded"]) for log in logs] == [(2, False), (1, False)]
    assert logs[1]["error_detail"] == "no answer within 0.3 seconds"
    assert logs[0]["status_code"] == 409, "the first attempt still held the event: in progress"
    time.sleep(1.0)
    assert attempts == [1]


def test_fresh_credentials_and_a_warning_off_loopback(caplog: pytest.LogCaptureFixture) -> None:
    from webhook_receiver.local.emulator import is_loopback

    first, second = Emulator(), Emulator()
    assert first.client_id != second.client_id and first.client_secret != second.client_secret
    assert len(first.client_secret) >= 24
    assert Emulator(client_id="given", client_secret="also-given").client_secret == "also-given"
    with caplog.at_level("WARNING", logger="webhook_receiver.emulator"):
        with Emulator(host="127.0.0.1"):
            pass
        assert caplog.records == []
        with Emulator(host="0.0.0.0"):
            pass
    assert "listens on 0.0.0.0, not a loopback address" in caplog.text
    assert [is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "localhost", "0.0.0.0", "10.0.0.1")] == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]


def test_a_queue_message_is_measured_as_the_utf8_sqs_counts() -> None:
    """Non-ASCII text counts its UTF-8 bytes (2 for 'é'), not the 6 of a \\u00e9 escape: 120 kB of it is no reason
    to elide the included resources of a message under SQS's 256 KiB."""
    from webhook_receiver.local.emulator.queues import SQS_MAX_BYTES, cloudevent
    from webhook_receiver.wire import make_event

    def with_notes(length: int) -> dict[str, object]:
        body = make_event("order.paid", {"id": "o-1", "type": "order"}, form="payload")
        body["payload"] = {**body["payload"], "included": {"notes": [{"id": "n", "text": "é" * length}]}}
        return body

    message = cloudevent(with_notes(60_000), integration_id="i", store_id="s", max_bytes=SQS_MAX_BYTES)
    assert 120_000 < len(message) < SQS_MAX_BYTES and "é".encode() in message
    assert json.loads(message)["included"]["notes"][0]["text"] == "é" * 60_000
    elided = json.loads(cloudevent(with_notes(140_000), integration_id="i", store_id="s", max_bytes=SQS_MAX_BYTES))
    assert elided["included"] == {"meta": {"includes_elided": True}}


def test_the_emulator_s_delivery_log_masks_a_webhook_url_s_login(caplog: pytest.LogCaptureFixture) -> None:
    from .processes import free_port

    with Emulator(retry_delays=()) as moltin, caplog.at_level("INFO", logger="webhook_receiver"):
        client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url)
        url = f"http://hook:it'sHunter2@127.0.0.1:{free_port()}/webhooks/moltin"  # nothing listens
        client.create_integration(name="r", url=url, secret_key="s" * 32, observes=["order.paid"])
        moltin.fire("order.paid")
        assert moltin.wait_idle(10)
    assert "could not deliver to http://hook:***@127.0.0.1" in caplog.text, caplog.text
    assert "Hunter2" not in caplog.text
