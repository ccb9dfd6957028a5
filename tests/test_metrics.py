"""Metrics in one process: the labels stay bounded, settings are checked, the extra is named when missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.testing import deliver, make_event

from .conftest import SECRET, new_app
from .processes import wait_for

prometheus_client = pytest.importorskip("prometheus_client")


def sample(registry: object, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


def test_counts_into_the_apps_registry_with_bounded_trigger_labels(receiver: WebhookReceiver) -> None:
    @receiver.on("order.paid", name="ship")
    def ship(event: Event) -> None:
        pass

    registry = prometheus_client.CollectorRegistry()
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_METRICS=registry)
    receiver.init_app(app)
    client = app.test_client()
    assert deliver(client, make_event("order.paid"), secret=SECRET).status_code == 200
    assert deliver(client, make_event("order.paid", attempt=3), secret=SECRET).status_code == 200
    for n in range(5):  # unauthenticated requests cannot make new series, whatever trigger they name
        event = make_event("order.paid")
        response = deliver(client, event, secret="not-the-secret-000", trigger=f"spam{n}_ext.created")
        assert response.status_code == 401
    assert deliver(client, make_event("cart.updated"), secret="not-the-secret-000").status_code == 401
    # an unknown but well-formed trigger, verified, is counted as "other"
    with pytest.warns(Warning):
        receiver.on("zzz.unknown", name="odd")(lambda event: None)
    assert deliver(client, make_event("zzz.unknown"), secret=SECRET).status_code == 200

    deliveries = "webhook_receiver_deliveries_total"
    http = {"receiver": "moltin", "transport": "webhook"}
    assert sample(registry, deliveries, trigger="order.paid", status="processed", **http) == 2.0
    assert sample(registry, deliveries, trigger="other", status="unauthorized", **http) == 5.0
    assert sample(registry, deliveries, trigger="cart.updated", status="unauthorized", **http) == 1.0
    assert sample(registry, deliveries, trigger="other", status="processed", **http) == 1.0
    assert sample(registry, "webhook_receiver_redeliveries_total", trigger="order.paid", **http) == 1.0
    runs = "webhook_receiver_handler_runs_total"
    assert sample(registry, runs, receiver="moltin", handler="ship", outcome="ok") == 2.0
    triggers = {
        s.labels["trigger"]
        for metric in registry.collect()
        for s in metric.samples
        if s.name == deliveries and "trigger" in s.labels
    }
    assert triggers == {"order.paid", "cart.updated", "other"}
    # the backlog is read in the background: the first scrape has no gauges, a later one has them
    wait_for(lambda: sample(registry, "webhook_receiver_store_up", receiver="moltin") == 1.0, 10, "the store read")


def test_the_backlog_gauges_are_read_at_most_once_per_interval(receiver: WebhookReceiver) -> None:
    registry = prometheus_client.CollectorRegistry()
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_METRICS=registry,
        WEBHOOK_RECEIVER_METRICS_CACHE_SECONDS=3600,
    )
    receiver.init_app(app)
    store = receiver.get_store(app)
    assert registry.get_sample_value("webhook_receiver_queue_due_events", {"receiver": "moltin"}) is None
    wait_for(lambda: registry.get_sample_value("webhook_receiver_store_up", {"receiver": "moltin"}), 10, "a read")
    assert sample(registry, "webhook_receiver_queue_due_events", receiver="moltin") == 0.0
    store.accept(Event.from_dict(make_event("order.paid")))
    assert sample(registry, "webhook_receiver_queue_due_events", receiver="moltin") == 0.0  # kept for the interval
    reader = app.extensions["webhook_receiver.observability"].metrics.gauges._readers["moltin"]
    reader.interval = 0.0  # due now: a scrape answers with what is kept and reads again in the background
    wait_for(lambda: sample(registry, "webhook_receiver_queue_due_events", receiver="moltin") == 1.0, 10, "1 due")
    assert sample(registry, "webhook_receiver_failed_events", receiver="moltin") == 0.0


def test_the_endpoint_exists_only_on_the_path_named(receiver: WebhookReceiver) -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_METRICS="/internal/metrics")
    receiver.init_app(app)
    client = app.test_client()
    answer = client.get("/internal/metrics")
    assert answer.status_code == 200 and b"webhook_receiver_queue_due_events" in answer.data
    assert SECRET.encode() not in answer.data
    assert client.get("/metrics").status_code == 404
    assert client.post("/internal/metrics").status_code == 405


@pytest.mark.parametrize("value", ["metrics", 9090, True])
def test_a_wrong_metrics_setting_stops_init_app(value: object) -> None:
    with pytest.raises(RuntimeError, match="WEBHOOK_RECEIVER_METRICS"):
        WebhookReceiver().init_app(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_METRICS=value))


MULTIPROCESS_REGISTRY = """
import sys
from flask import Flask
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from webhook_receiver import WebhookReceiver
from webhook_receiver.testing import deliver, make_event

def app_with(registry):
    app = Flask("x")
    app.config.update(TESTING=True, WEBHOOK_RECEIVER_SECRET_KEY="s" * 32, WEBHOOK_RECEIVER_METRICS=registry)
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda event: None)
    receiver.init_app(app)
    return app

try:
    app_with(CollectorRegistry())
except RuntimeError as exc:
    print("refused:", exc)
registry = CollectorRegistry()
MultiProcessCollector(registry)
app = app_with(registry)
assert deliver(app.test_client(), make_event("order.paid"), secret="s" * 32).status_code == 200
labels = {"receiver": "moltin", "trigger": "order.paid", "status": "processed", "transport": "webhook"}
import time
waited = time.monotonic()
while registry.get_sample_value("webhook_receiver_deliveries_total", labels) is None and time.monotonic() < waited + 30:
    time.sleep(0.05)  # the counts reach the files within FLUSH_SECONDS, from the flushing thread
print("counted:", registry.get_sample_value("webhook_receiver_deliveries_total", labels))
"""


def test_a_registry_that_cannot_read_the_multiprocess_folder_stops_init_app(tmp_path: Path) -> None:
    # in multiprocess mode the counts go to files: a registry without the collector that reads them shows none
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_REGISTRY], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "refused: WEBHOOK_RECEIVER_METRICS is a CollectorRegistry without a MultiProcessCollector" in done.stdout
    assert "counted: 1.0" in done.stdout


def test_without_prometheus_client_the_extra_is_named() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from flask import Flask\n"
        "from webhook_receiver import WebhookReceiver\n"
        "app = Flask('x'); app.config.update(TESTING=True, WEBHOOK_RECEIVER_SECRET_KEY='s' * 32,"
        " WEBHOOK_RECEIVER_METRICS='/metrics')\n"
        "try:\n    WebhookReceiver().init_app(app)\n"
        "except RuntimeError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'webhook_receiver[metrics]'" in done.stdout, done.stdout + done.stderr
