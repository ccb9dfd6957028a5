"""Counts wait in the process's tally and reach prometheus_client's metrics exactly, once each.

The hot path adds to plain dictionaries (``metrics._Tally``); a collect of a
registry in this process, the endpoint, a thread every ``FLUSH_SECONDS`` and
the exit write them. These tests hold the written values to the events sent:
every bucket, the sums, a forked child that must not write its parent's
counts again, an observer of runs that fails, and the public-API way of
writing a histogram for a prometheus_client that keeps its buckets otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from webhook_receiver import Event, WebhookReceiver, instrumentation
from webhook_receiver.observability import metrics
from webhook_receiver.testing import deliver, make_event

from .conftest import SECRET, new_app
from .processes import in_child, wait_for

prometheus_client = pytest.importorskip("prometheus_client")


def sample(registry: object, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


def test_every_bucket_and_the_sum_are_written_as_observed() -> None:
    registry = prometheus_client.CollectorRegistry()
    families = metrics._families_for(registry)
    durations = [0.001, 0.004, 0.005, 0.02, 0.3, 3.0, 9.0, 42.0]  # 0.005 is its bucket's bound: le
    for seconds in durations:
        families.tally.answered(
            ("d", "r", "order.paid", "processed", "webhook"), ("t", "r", "processed", "webhook"), seconds, None
        )
        families.tally.ran(("h", "r", "ship", "ok"), ("hd", "r", "ship"), seconds)
    labels = {"receiver": "r", "status": "processed", "transport": "webhook"}
    name = "webhook_receiver_delivery_duration_seconds"
    assert sample(registry, name + "_count", **labels) == len(durations)  # the collect wrote them first
    assert sample(registry, name + "_sum", **labels) == pytest.approx(sum(durations))
    for bound in metrics._DELIVERY_BUCKETS:
        le = "+Inf" if bound == float("inf") else repr(bound)
        expected = sum(1 for seconds in durations if seconds <= bound)
        assert sample(registry, name + "_bucket", le=le, **labels) == expected, le
    handler = "webhook_receiver_handler_duration_seconds"
    assert sample(registry, handler + "_count", receiver="r", handler="ship") == len(durations)
    assert sample(registry, handler + "_bucket", receiver="r", handler="ship", le="30.0") == 7
    assert sample(registry, "webhook_receiver_handler_runs_total", receiver="r", handler="ship", outcome="ok") == 8
    # written once: a second collect adds nothing
    assert sample(registry, name + "_count", **labels) == len(durations)


def test_the_installed_prometheus_client_takes_the_one_write_per_bucket_path() -> None:
    registry = prometheus_client.CollectorRegistry()
    child = metrics._families_for(registry).delivery_duration.labels("r", "s", "webhook")
    assert isinstance(child._buckets, list) and hasattr(child._sum, "inc")  # else _observe_all observes one by one


class _PublicOnly:
    """A histogram child with nothing but ``observe``, as another prometheus_client version might keep it."""

    def __init__(self) -> None:
        self.observed: list[float] = []

    def observe(self, amount: float) -> None:
        self.observed.append(amount)


def test_without_the_private_buckets_each_observation_is_made_and_every_bucket_and_sum_stay_exact() -> None:
    bounds = metrics._DELIVERY_BUCKETS
    tally = [0.0] * (2 * len(bounds))
    durations = [0.001, 0.004, 0.02, 0.03, 9.5]
    for seconds in durations:
        import bisect

        position = bisect.bisect_left(bounds, seconds)
        tally[position] += 1
        tally[len(bounds) + position] += seconds
    child = _PublicOnly()
    metrics._observe_all(child, tally)
    assert len(child.observed) == len(durations)
    assert sum(child.observed) == pytest.approx(sum(durations))
    for bound in bounds:
        assert sum(1 for x in child.observed if x <= bound) == sum(1 for x in durations if x <= bound)


def test_a_forked_child_writes_only_its_own_counts(receiver: WebhookReceiver, tmp_path: Path) -> None:
    receiver.on("order.paid", name="ship")(lambda event: None)
    registry = prometheus_client.CollectorRegistry()
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_METRICS=registry)
    receiver.init_app(app)
    client = app.test_client()
    for _ in range(3):
        assert deliver(client, make_event("order.paid"), secret=SECRET).status_code == 200
    labels = {"receiver": "moltin", "trigger": "order.paid", "status": "processed", "transport": "webhook"}
    deliveries = "webhook_receiver_deliveries_total"
    # the parent's three wait in its tally (no collect yet) as it forks

    def child() -> bool:
        assert deliver(app.test_client(), make_event("order.paid"), secret=SECRET).status_code == 200
        return sample(registry, deliveries, **labels) == 1.0  # its own one, not the parent's three again

    assert in_child(child, hung_after=30) == 0
    assert sample(registry, deliveries, **labels) == 3.0


def test_counts_reach_the_multiprocess_files_without_a_scrape_of_the_process_that_made_them(tmp_path: Path) -> None:
    # the process counts, then sleeps without being scraped; another process reads the folder
    code = textwrap.dedent("""
        import sys, time
        from flask import Flask
        from webhook_receiver import WebhookReceiver
        from webhook_receiver.testing import deliver, make_event
        app = Flask("x")
        app.config.update(TESTING=True, WEBHOOK_RECEIVER_SECRET_KEY="s" * 32, WEBHOOK_RECEIVER_METRICS="/metrics")
        receiver = WebhookReceiver()
        receiver.on("order.paid")(lambda event: None)
        receiver.init_app(app)
        for _ in range(7):
            assert deliver(app.test_client(), make_event("order.paid"), secret="s" * 32).status_code == 200
        print("sent", flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    counting = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert counting.stdout is not None and counting.stdout.readline().strip() == "sent"
        read = textwrap.dedent("""
            from prometheus_client import CollectorRegistry
            from prometheus_client.multiprocess import MultiProcessCollector
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            labels = {"receiver": "moltin", "trigger": "order.paid", "status": "processed", "transport": "webhook"}
            print(registry.get_sample_value("webhook_receiver_deliveries_total", labels))
        """)

        def seven() -> bool:
            done = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True, timeout=60)
            return done.stdout.strip() == "7.0"

        wait_for(seven, 30, "the seven deliveries in the multiprocess files")
    finally:
        counting.kill()
        counting.wait()


def test_an_observer_of_runs_that_fails_leaves_the_run_and_the_other_counters_alone(receiver: WebhookReceiver) -> None:
    ran: list[str] = []
    receiver.on("order.paid", name="ship")(lambda event: ran.append(event.id))
    registry = prometheus_client.CollectorRegistry()
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_METRICS=registry)

    class Broken:
        def answered(self, *args: Any, **kwargs: Any) -> None:
            pass

        def watching(self) -> bool:
            return False

        def handler_ran(self, *args: Any) -> None:
            raise RuntimeError("broken observer")

        def before_accept(self, event: Event) -> Event:
            return event

    instrumentation.add_observer(app, Broken())  # type: ignore[arg-type]
    receiver.init_app(app)
    assert deliver(app.test_client(), make_event("order.paid", event_id="evt-broken"), secret=SECRET).status_code == 200
    assert ran == ["evt-broken"]
    runs = "webhook_receiver_handler_runs_total"
    assert sample(registry, runs, receiver="moltin", handler="ship", outcome="ok") == 1.0


def test_a_failing_handler_is_counted_failed_with_its_duration(receiver: WebhookReceiver) -> None:
    @receiver.on("order.paid", name="ship")
    def ship(event: Event) -> None:
        time.sleep(0.03)
        raise RuntimeError("no stock")

    registry = prometheus_client.CollectorRegistry()
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_METRICS=registry)
    receiver.init_app(app)
    assert deliver(app.test_client(), make_event("order.paid"), secret=SECRET).status_code == 500
    runs = "webhook_receiver_handler_runs_total"
    assert sample(registry, runs, receiver="moltin", handler="ship", outcome="failed") == 1.0
    assert sample(registry, runs, receiver="moltin", handler="ship", outcome="ok") == 0.0
    duration = "webhook_receiver_handler_duration_seconds"
    assert sample(registry, duration + "_bucket", receiver="moltin", handler="ship", le="0.025") == 0.0
    assert sample(registry, duration + "_bucket", receiver="moltin", handler="ship", le="+Inf") == 1.0
