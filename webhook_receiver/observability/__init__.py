"""Looking in on a running receiver: Prometheus metrics, OpenTelemetry traces, health checks.

Each part is a no-op unless asked for; metrics need the extra ``[metrics]``,
traces the extra ``[otel]``. See :mod:`webhook_receiver.observability.setup`
for the configuration keys.
"""

from .health import Check, HealthReport, check_health
from .setup import KEYS, health_of, observe

__all__ = ["KEYS", "Check", "HealthReport", "check_health", "health_of", "observe"]
