"""Metrics as a real Prometheus server sees them: gunicorn with 2 workers in multiprocess mode, scraped every second."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from webhook_receiver.wire import make_event, post

from .processes import Processes, free_port, logs_text, port_open, wait_for

METRICS_APP_SECRET = "metrics-app-secret-5b7e21"  # tests/metrics_app.py's (it builds its app when imported)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def require_prometheus() -> tuple[str, str]:
    """The ``prometheus`` and ``promtool`` binaries; missing, a failure under CI=true (``.ci/run`` installs them)."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if None in found:
        message = "prometheus and promtool are needed (apt-get install prometheus; .ci/run does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found  # type: ignore[return-value]


def status_of(response: requests.Response) -> str:
    """The status word of a JSON answer (the answer itself in the failure message)."""
    assert response.headers.get("Content-Type") == "application/json", (response.status_code, response.text[:300])
    status: str = response.json()["status"]
    return status


class Prometheus:
    """A Prometheus server on 127.0.0.1 scraping *target* every second."""

    def __init__(self, procs: Processes, folder: Path, binary: str, target: str) -> None:
        port = free_port()
        config = folder / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: receiver\n    metrics_path: /webhooks/metrics\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        procs.start(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            folder / "prometheus.log",
        )
        wait_for(lambda: port_open(port), 30, "Prometheus")
        self.url = f"http://127.0.0.1:{port}"
        wait_for(self.ready, 60, "Prometheus to be ready")  # it answers 503 while its storage opens

    def ready(self) -> bool:
        return requests.get(f"{self.url}/-/ready", timeout=5).status_code == 200

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def by(self, promql: str, label: str) -> dict[str, float]:
        return {sample["metric"].get(label, ""): float(sample["value"][1]) for sample in self.query(promql)}

    def scalar(self, promql: str) -> float | None:
        found = self.query(promql)
        return float(found[0]["value"][1]) if found else None


@pytest.fixture
def gunicorn_env(tmp_path: Path, processes: Processes) -> Iterator[tuple[Processes, Path]]:
    folder = tmp_path / "multiproc"
    folder.mkdir()
    processes.env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    yield processes, folder


def _start(procs: Processes, tmp_path: Path) -> str:
    url = procs.gunicorn(tmp_path / "gunicorn.log", workers=2, app="tests.metrics_app:app")
    return url


def test_prometheus_counts_200_deliveries_by_status_and_handler(
    tmp_path: Path, gunicorn_env: tuple[Processes, Path]
) -> None:
    prometheus_bin, promtool = require_prometheus()
    procs, _ = gunicorn_env
    url = _start(procs, tmp_path)
    base = url.rsplit("/webhooks/", 1)[0]

    sent: Counter[str] = Counter()
    processed_ids = [make_event("order.paid", event_id=f"ok-{n}") for n in range(100)]
    with ThreadPoolExecutor(4) as pool:  # 100 processed, four at a time: one after another, one worker took them all
        codes = list(pool.map(lambda event: post(url, event, secret=METRICS_APP_SECRET).status_code, processed_ids))
    assert codes == [200] * 100
    sent["processed"] += 100
    for n, event in enumerate(processed_ids[:40]):  # 40 duplicates, 20 of them as upstream's redeliveries
        again = dict(event, attempt=2) if n % 2 else event
        assert status_of(post(url, again, secret=METRICS_APP_SECRET)) == "duplicate"
        sent["duplicate"] += 1
    for n in range(20):  # 20 failed: ship raises
        assert post(url, make_event("order.paid", event_id=f"fail-{n}"), secret=METRICS_APP_SECRET).status_code == 500
        sent["failed"] += 1
    for _ in range(20):  # 20 refused for the secret
        assert post(url, make_event("order.paid"), secret="wrong-secret-123456").status_code == 401
        sent["unauthorized"] += 1
    for _ in range(20):  # 20 with no handler
        assert status_of(post(url, make_event("product.created"), secret=METRICS_APP_SECRET)) == "ignored"
        sent["ignored"] += 1
    assert sum(sent.values()) == 200

    prometheus = Prometheus(procs, tmp_path, prometheus_bin, base.removeprefix("http://"))
    expected = {status: float(count) for status, count in sent.items()}

    def counts_seen() -> bool:
        return prometheus.by("sum by (status) (webhook_receiver_deliveries_total)", "status") == expected

    try:
        wait_for(counts_seen, 60, f"Prometheus to see {expected}")
    except AssertionError:
        raise AssertionError(
            f"{prometheus.by('sum by (status) (webhook_receiver_deliveries_total)', 'status')}\n{logs_text(tmp_path)}"
        ) from None
    runs = prometheus.query("sum by (handler, outcome) (webhook_receiver_handler_runs_total)")
    by_handler = {(s["metric"]["handler"], s["metric"]["outcome"]): float(s["value"][1]) for s in runs}
    assert by_handler == {("ship", "ok"): 100.0, ("ship", "failed"): 20.0, ("audit", "ok"): 120.0}
    assert prometheus.scalar("sum(webhook_receiver_handler_duration_seconds_count)") == 240.0
    assert prometheus.by("sum by (trigger) (webhook_receiver_deliveries_total)", "trigger") == {
        "order.paid": 180.0,
        "product.created": 20.0,
    }
    assert prometheus.scalar("sum(webhook_receiver_redeliveries_total)") == 20.0
    assert prometheus.scalar('sum(webhook_receiver_delivery_duration_seconds_count{status="processed"})') == 100.0
    # both workers answered some of them: the sum is across processes, not one worker's own
    assert len(list((tmp_path / "multiproc").glob("counter_*.db"))) >= 2

    exposition = requests.get(f"{base}/webhooks/metrics", timeout=5)
    assert exposition.status_code == 200
    check = subprocess.run([promtool, "check", "metrics"], input=exposition.content, capture_output=True)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), (
        check.stdout + check.stderr
    ).decode()


def test_prometheus_gauges_follow_a_growing_and_draining_backlog(
    tmp_path: Path, gunicorn_env: tuple[Processes, Path]
) -> None:
    prometheus_bin, _ = require_prometheus()
    procs, _ = gunicorn_env
    gate = tmp_path / "gate"
    procs.env.update(WHR_DISPATCH="thread", WHR_GATE=str(gate))
    url = _start(procs, tmp_path)
    base = url.rsplit("/webhooks/", 1)[0]
    prometheus = Prometheus(procs, tmp_path, prometheus_bin, base.removeprefix("http://"))
    wait_for(lambda: prometheus.scalar("webhook_receiver_queue_due_events") == 0.0, 60, "the first scrape")

    for n in range(30):  # 2 workers x 2 threads hold 4 of them; the rest wait
        assert post(url, make_event("order.paid", event_id=f"wait-{n}"), secret=METRICS_APP_SECRET).status_code == 202
    wait_for(lambda: (prometheus.scalar("max(webhook_receiver_queue_due_events)") or 0) >= 26, 60, "a backlog of 26")
    wait_for(
        lambda: (prometheus.scalar("max(webhook_receiver_queue_oldest_due_age_seconds)") or 0) >= 1,
        60,
        "the oldest due event to age",
    )
    assert prometheus.scalar("max(webhook_receiver_store_up)") == 1.0

    gate.write_text("open")
    wait_for(lambda: prometheus.scalar("max(webhook_receiver_queue_due_events)") == 0.0, 60, "the backlog to drain")
    wait_for(lambda: prometheus.scalar("max(webhook_receiver_queue_oldest_due_age_seconds)") == 0.0, 60, "no due event")
    wait_for(
        lambda: prometheus.scalar('sum(webhook_receiver_handler_runs_total{handler="audit"})') == 30.0,
        60,
        "30 runs of audit",
    )
    health = requests.get(f"{base}/webhooks/health", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "healthy", health.text
    assert METRICS_APP_SECRET not in json.dumps(health.json())
