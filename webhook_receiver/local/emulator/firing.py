"""Delivering fired events to webhook and queue integrations, with upstream's retries."""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

import requests

from ...redact import hide_passwords
from ...untrusted import protect
from ...wire import SECRET_HEADER, TRIGGER_HEADER, make_event
from .queues import SQS_MAX_BYTES, Sent, cloudevent, send_sqs, send_stomp
from .state import QUEUE_TYPES, EmulatorState, now_iso

__all__ = ["Fired", "Firer", "unreachable"]

logger = protect(logging.getLogger("webhook_receiver.emulator"))

#: The pauses before each retry, in seconds; upstream's are longer.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)


def unreachable(url: str, exc: requests.RequestException) -> str:
    """Why *url* could not be reached, and the likely cause, in one line."""
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    if isinstance(exc, requests.ConnectionError) and "refused" in str(exc).lower():
        return f"could not deliver to {url}: connection refused; is your app running on {where}?"
    if isinstance(exc, requests.ConnectionError):
        return f"could not deliver to {url}: {type(exc).__name__}; is {parts.hostname} reachable from here?"
    return f"could not deliver to {url}: {type(exc).__name__}"


@dataclass
class Fired:
    """What one :meth:`Firer.fire` set off.

    :param event_id: the event's id, the same on every delivery and retry.
    :param trigger: the event name.
    :param jobs: one job id per integration the event goes to.
    """

    event_id: str
    trigger: str
    jobs: list[str] = field(default_factory=list)


class Firer:
    """Delivers events to every enabled integration observing them.

    Each delivery runs in a thread of its own: to a webhook, a POST with
    upstream's headers and body, retried with ``attempt`` incremented after
    each non-2xx answer, timeout or connection error, until it succeeds or the
    retries run out; to a ``stomp`` or ``aws_sqs`` integration, the event as a
    CloudEvent put on its broker's destination or its SQS queue (see
    :mod:`~webhook_receiver.local.emulator.queues`), retried alike when the
    queue cannot be reached or refuses it. Every attempt is written to the
    integration logs.

    :param state: the stand-in's memory.
    :param retry_delays: the pause before each retry; its length is the
        number of retries.
    :param timeout: how long a delivery waits for an answer (upstream: about
        10 seconds).
    :param sqs_endpoint_url: the SQS endpoint ``aws_sqs`` integrations are
        delivered through (a local one such as moto's); AWS's for the
        integration's region when ``None``.
    """

    def __init__(
        self,
        state: EmulatorState,
        *,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        timeout: float = 10.0,
        sqs_endpoint_url: str | None = None,
    ) -> None:
        self.state = state
        self.sqs_endpoint_url = sqs_endpoint_url
        self.retry_delays = tuple(retry_delays)
        self.timeout = timeout
        self._pending = 0
        self._idle = threading.Condition()
        self._closing = threading.Event()
        self._session = requests.Session()

    def fire(
        self,
        trigger: str,
        data: Mapping[str, Any] | None = None,
        *,
        event_id: str | None = None,
        included: Any = None,
    ) -> Fired:
        """Deliver *trigger* with *data* (a realistic sample when ``None``).

        :param included: the related resources sent with *data* (as
            ``included``), when given.
        :returns: the event id and the jobs started; delivery goes on in the
            background (see :meth:`wait_idle`).
        """
        body = make_event(trigger, data, event_id=event_id or str(uuid.uuid4()))
        if included is not None and isinstance(body.get("payload"), dict) and "data" in body["payload"]:
            body["payload"] = {**body["payload"], "included": included}
            body["resources"] = json.dumps(body["payload"])
        fired = Fired(body["id"], trigger)
        for integration in self.state.observers(trigger):
            if not integration.get("enabled"):
                continue
            job = self.state.add_job(integration["id"])
            fired.jobs.append(job["id"])
            with self._idle:
                self._pending += 1
            threading.Thread(
                target=self._deliver,
                args=(copy.deepcopy(integration), job["id"], body),
                name=f"emulator-delivery-{job['id'][:8]}",
                daemon=True,
            ).start()
        return fired

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every delivery, retries included, has ended.

        :returns: ``False`` if some were still going after *timeout* seconds.
        """
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        """Stop retrying; deliveries under way end after their current attempt."""
        self._closing.set()
        self._session.close()

    def _deliver(self, integration: dict[str, Any], job_id: str, body: dict[str, Any]) -> None:
        try:
            configuration = integration.get("configuration") or {}
            for attempt in range(1, len(self.retry_delays) + 2):
                if self._attempt(integration, configuration, job_id, body, attempt):
                    return
                if attempt > len(self.retry_delays) or self._closing.wait(self.retry_delays[attempt - 1]):
                    return
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _attempt(
        self,
        integration: dict[str, Any],
        configuration: Mapping[str, Any],
        job_id: str,
        body: dict[str, Any],
        attempt: int,
    ) -> bool:
        if integration.get("integration_type") in QUEUE_TYPES:
            return self._enqueue(integration, configuration, job_id, body, attempt)
        delivery = dict(body, attempt=attempt)
        delivery["integration"] = {k: integration.get(k) for k in ("id", "integration_type", "name", "description")}
        delivery["configuration"] = dict(configuration)
        headers = {TRIGGER_HEADER: body["triggered_by"], "Content-Type": "application/json"}
        if configuration.get("secret_key"):
            headers[SECRET_HEADER] = configuration["secret_key"]
        started = time.monotonic()
        status: int | None = None
        text = ""
        error: str | None = None
        try:
            response = self._session.post(
                configuration["url"], json=delivery, headers=headers, timeout=self.timeout, allow_redirects=False
            )
            status, text = response.status_code, response.text[:1000]
            if 300 <= status < 400:
                error = (
                    f"the endpoint answered {status}, a redirect to"
                    f" {response.headers.get('Location', '(no Location)')}: not followed"
                )
            elif not 200 <= status < 300:
                error = f"the endpoint answered {status}"
        except requests.Timeout:
            error = f"no answer within {self.timeout:g} seconds"
        except requests.RequestException as exc:
            error = unreachable(configuration["url"], exc)
        return self._record(integration, job_id, body, attempt, started, Sent(status, text, error))

    def _enqueue(
        self,
        integration: dict[str, Any],
        configuration: Mapping[str, Any],
        job_id: str,
        body: dict[str, Any],
        attempt: int,
    ) -> bool:
        """One attempt to put the event on a queue integration's queue, logged as a delivery."""
        started = time.monotonic()
        sqs = integration.get("integration_type") == "aws_sqs"
        message = cloudevent(
            body,
            integration_id=str(integration["id"]),
            store_id=self.state.store_id,
            max_bytes=SQS_MAX_BYTES if sqs else None,
        )
        if sqs:
            sent = send_sqs(configuration, message, endpoint_url=self.sqs_endpoint_url, timeout=self.timeout)
        else:
            sent = send_stomp(configuration, message, timeout=self.timeout)
        return self._record(integration, job_id, body, attempt, started, sent)

    def _record(
        self, integration: dict[str, Any], job_id: str, body: dict[str, Any], attempt: int, started: float, sent: Sent
    ) -> bool:
        """Write one attempt to the logs, as upstream serves them, and log it; whether it succeeded."""
        status, text, error = sent
        succeeded = error is None
        log_id = str(uuid.uuid4())
        self.state.add_log(
            {
                "id": log_id,
                "type": "integration-log",
                "succeeded": succeeded,
                "attempt": attempt,
                "processing_time": round(time.monotonic() - started, 3),
                "body": text,
                "status_code": status,
                "error_detail": error,
                "relationships": {
                    "integration": {"data": {"type": "integration", "id": integration["id"]}},
                    "job": {"data": {"type": "integration-job", "id": job_id}},
                },
                "meta": {"timestamps": {"created_at": now_iso()}},
            },
            trigger=body["triggered_by"],
            event_id=body["id"],
        )
        logger.info(
            "delivered %s %s to integration %s, attempt %d: %s",
            body["triggered_by"],
            body["id"],
            integration["id"],
            attempt,
            "ok" if succeeded else hide_passwords(str(error)),  # the webhook URL's login, if it has one
        )
        return succeeded
