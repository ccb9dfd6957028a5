"""Setting up metrics, traces and the readiness endpoint on an app: the one call ``init_app`` makes.

The keys (read here, each checked; a value of the wrong kind stops
``init_app`` with a message):

``WEBHOOK_RECEIVER_METRICS``
    ``None`` (the default: no metrics), an endpoint path such as
    ``"/webhooks/metrics"``, or a ``prometheus_client.CollectorRegistry`` to
    add the metrics to (extra ``[metrics]``).
``WEBHOOK_RECEIVER_METRICS_CACHE_SECONDS``
    How long the backlog read from the store (the gauges, the age of the
    oldest due event in the health checks) is kept before it is read again in
    the background (5).
``WEBHOOK_RECEIVER_TRACING``
    ``None`` (the default: spans when ``opentelemetry-api`` is installed),
    ``True``, ``False``, or a ``TracerProvider`` (extra ``[otel]``).
``WEBHOOK_RECEIVER_HEALTH_URL``
    ``None`` (the default: no endpoint) or a path for the readiness endpoint.
``WEBHOOK_RECEIVER_HEALTH_MAX_AGE``
    Seconds the oldest due event may wait before the health is degraded (300).
``WEBHOOK_RECEIVER_HEALTH_TIMEOUT``
    Seconds the checks wait for the store before they say it is down (3; at
    most 60): keep it below the probe's own timeout.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from .. import instrumentation
from .backlog import BacklogReader
from .health import DEFAULT_MAX_AGE, DEFAULT_TIMEOUT, HealthReport, StoreProbe

__all__ = ["KEYS", "MAX_HEALTH_TIMEOUT", "ObservabilityState", "observe", "health_of"]

#: The configuration keys this package reads.
KEYS = (
    "WEBHOOK_RECEIVER_METRICS",
    "WEBHOOK_RECEIVER_METRICS_CACHE_SECONDS",
    "WEBHOOK_RECEIVER_TRACING",
    "WEBHOOK_RECEIVER_HEALTH_URL",
    "WEBHOOK_RECEIVER_HEALTH_MAX_AGE",
    "WEBHOOK_RECEIVER_HEALTH_TIMEOUT",
)

#: The longest ``WEBHOOK_RECEIVER_HEALTH_TIMEOUT`` (and ``health --timeout``), in seconds.
MAX_HEALTH_TIMEOUT = 60.0

#: The key of ``app.extensions`` holding an :class:`ObservabilityState`.
STATE_KEY = "webhook_receiver.observability"


@dataclass
class ObservabilityState:
    """What this package set up on one app.

    :param metrics: the metrics observer, when metrics are on.
    :param max_age: ``WEBHOOK_RECEIVER_HEALTH_MAX_AGE``.
    :param cache_seconds: ``WEBHOOK_RECEIVER_METRICS_CACHE_SECONDS``.
    :param timeout: ``WEBHOOK_RECEIVER_HEALTH_TIMEOUT``.
    :param probes: each receiver's health checks (its store, dispatcher and backlog reader), by name.
    """

    metrics: Any = None
    max_age: float = DEFAULT_MAX_AGE
    cache_seconds: float = 5.0
    timeout: float = DEFAULT_TIMEOUT
    probes: dict[str, StoreProbe] = field(default_factory=dict)
    #: The paths the app's keys mount (metrics, health), by key.
    paths: dict[str, str] = field(default_factory=dict)


def _is_seconds(value: Any) -> bool:
    """Whether *value* is a positive, finite number of seconds (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < math.inf


def _seconds(config: Any, key: str, default: float, *, at_most: float = math.inf) -> float:
    value = config.get(key)
    if value is None:
        return default
    if not _is_seconds(value):
        raise RuntimeError(f"{key} is a positive, finite number of seconds, not {value!r}")
    if value > at_most:
        raise RuntimeError(f"{key} is at most {at_most:g} seconds, not {value!r}")
    return float(value)


def _path(config: Any, key: str) -> str | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise RuntimeError(f"{key} is a path such as '/webhooks/health', not {type(value).__name__}")
    _plain_path(key, value)
    return value


def _plain_path(key: str, path: str) -> None:
    """Refuse a path with a variable part (``<x>``: every request would fail) or white space."""
    if "<" in path or ">" in path or any(char.isspace() for char in path):
        raise RuntimeError(f"{key} is a plain path such as '/webhooks/health', with no '<...>' part or space")


def _free_path(app: Any, key: str, path: str) -> None:
    """Refuse *path* when a route of *app* has it already: one of the two would never be reached."""
    for rule in app.url_map.iter_rules():
        if rule.rule == path:
            raise RuntimeError(f"{key} is {path!r}, a path the app routes already (to {rule.endpoint!r})")


def observe(app: Any, receiver: str, store: Any, dispatcher: Any, *, url: str | None = None) -> None:
    """Set up what the app's keys ask for, once per app, and watch *receiver*'s store.

    :param app: the Flask app.
    :param receiver: the receiver's name.
    :param store: its store.
    :param dispatcher: its dispatcher.
    :param url: where the receiver's endpoint is to be mounted.
    :raises RuntimeError: if a key has a value of the wrong kind, names an
        extra that is not installed, or a path that another route (this
        receiver's endpoint among them) has.
    """
    state: ObservabilityState | None = app.extensions.get(STATE_KEY)
    if state is None:
        state = _first(app)
    for key, path in state.paths.items():
        if path == url:
            raise RuntimeError(
                f"{key} is {path!r}, the URL of webhook receiver {receiver!r}: give it a path of its own"
            )
    reader = BacklogReader(store, state.cache_seconds)
    state.probes[receiver] = StoreProbe(store, dispatcher, reader)
    if state.metrics is not None:
        state.metrics.gauges.add(receiver, reader)


def _first(app: Any) -> ObservabilityState:
    config = app.config
    state = ObservabilityState(
        max_age=_seconds(config, "WEBHOOK_RECEIVER_HEALTH_MAX_AGE", DEFAULT_MAX_AGE),
        # an hour at most: the gauges of a longer cache would not follow a backlog an alert is watching
        cache_seconds=_seconds(config, "WEBHOOK_RECEIVER_METRICS_CACHE_SECONDS", 5.0, at_most=3600.0),
        # a minute at most: a probe waits for the answer, and no probe waits that long
        timeout=_seconds(config, "WEBHOOK_RECEIVER_HEALTH_TIMEOUT", DEFAULT_TIMEOUT, at_most=MAX_HEALTH_TIMEOUT),
    )
    metrics = config.get("WEBHOOK_RECEIVER_METRICS")
    health_url = _path(config, "WEBHOOK_RECEIVER_HEALTH_URL")
    if isinstance(metrics, str):
        _plain_path("WEBHOOK_RECEIVER_METRICS", metrics)
        if metrics == health_url:
            raise RuntimeError(
                "WEBHOOK_RECEIVER_METRICS and WEBHOOK_RECEIVER_HEALTH_URL are one path: the readiness probe"
                " would read the metrics, and never see a 503"
            )
        _free_path(app, "WEBHOOK_RECEIVER_METRICS", metrics)
        state.paths["WEBHOOK_RECEIVER_METRICS"] = metrics
    if health_url is not None:
        _free_path(app, "WEBHOOK_RECEIVER_HEALTH_URL", health_url)
        state.paths["WEBHOOK_RECEIVER_HEALTH_URL"] = health_url
    from .tracing import tracing_observer

    tracing = tracing_observer(config.get("WEBHOOK_RECEIVER_TRACING"))
    if metrics is not None and metrics is not False:
        from .metrics import metrics_observer

        state.metrics = metrics_observer(app, metrics, state.cache_seconds)
        instrumentation.add_observer(app, state.metrics)
    if tracing is not None:
        instrumentation.add_observer(app, tracing)
    if health_url is not None:
        _health_endpoint(app, health_url)
    app.extensions[STATE_KEY] = state
    return state


def health_of(
    app: Any, receivers: list[str] | None = None, *, workers: bool = True, timeout: float | None = None
) -> HealthReport:
    """The health of *app*'s receivers (all of them by default), in *timeout* seconds at most.

    Every receiver's store is asked at once, each in a thread of its own; a
    store that has not answered when the time is up is said to be down.

    :param receivers: the names of the receivers to check.
    :param workers: check the workers of this process.
    :param timeout: seconds to wait for the stores (``WEBHOOK_RECEIVER_HEALTH_TIMEOUT`` by default).
    :raises ValueError: if *timeout* is not a number of seconds above 0 and at most 60.
    """
    if timeout is not None and not (_is_seconds(timeout) and timeout <= MAX_HEALTH_TIMEOUT):
        raise ValueError(f"timeout is a number of seconds above 0 and at most {MAX_HEALTH_TIMEOUT:g}, not {timeout!r}")
    state: ObservabilityState | None = app.extensions.get(STATE_KEY)
    report = HealthReport()
    if state is None:
        return report
    deadline = time.monotonic() + (state.timeout if timeout is None else timeout)
    app = getattr(app, "_get_current_object", lambda: app)()  # current_app is bound to this thread only
    asked = {
        name: (probe, probe.start(state.max_age, app))
        for name, probe in sorted(state.probes.items())
        if receivers is None or name in receivers
    }
    for name, (probe, asking) in asked.items():
        report.checks[name] = probe.check(asking, deadline=deadline, workers=workers)
    return report


def _health_endpoint(app: Any, path: str) -> None:
    from flask import jsonify

    def readiness() -> Any:
        report = health_of(app)
        response = jsonify(report.to_dict())
        response.status_code = 503 if report.exit_code == 2 else 200
        response.headers["Cache-Control"] = "no-store"
        return response

    app.add_url_rule(path, endpoint="webhook_receiver_health", view_func=readiness, methods=["GET"])
