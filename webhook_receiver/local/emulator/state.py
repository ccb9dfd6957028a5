"""What the Moltin stand-in remembers: credentials, tokens, integrations, jobs and logs."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["EmulatorState", "Token", "now_iso"]

#: Upstream's quotas: integrations per store, events per integration.
MAX_INTEGRATIONS = 100
MAX_EVENTS_PER_INTEGRATION = 5
TOKEN_LIFETIME = 3600
#: The integration types delivered to a queue rather than an endpoint.
QUEUE_TYPES = ("stomp", "aws_sqs")


def now_iso() -> str:
    """The current time as upstream writes timestamps: ``2018-04-30T09:35:32.202Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Token:
    """An access token the stand-in handed out."""

    value: str
    expires: float
    implicit: bool = False


@dataclass
class EmulatorState:
    """The stand-in's memory; every method is safe to call from several threads.

    :param client_id: the client id the token endpoint accepts.
    :param client_secret: the client secret the token endpoint accepts.
    """

    client_id: str
    client_secret: str
    tokens: dict[str, Token] = field(default_factory=dict)
    integrations: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    #: The trigger and event id each log delivered, by log id: upstream's log
    #: envelope does not say, but tests and the demo want to know.
    log_events: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: The most items a list endpoint serves per page, whatever was asked
    #: (a store may serve fewer than ``page[limit]``).
    page_size: int = 25
    #: Status codes to answer on the next API calls, for fault tests: each
    #: entry is ``(status, retry_after)``.
    faults: list[tuple[int, int | None]] = field(default_factory=list)
    #: The store's id, sent as ``storeid`` in queue messages.
    store_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __repr__(self) -> str:
        return f"<EmulatorState integrations={len(self.integrations)} logs={len(self.logs)}>"

    def issue_token(self, *, implicit: bool, lifetime: int = TOKEN_LIFETIME) -> Token:
        token = Token(secrets.token_hex(20), time.time() + lifetime, implicit)
        with self.lock:
            self.tokens[token.value] = token
        return token

    def check_token(self, value: str) -> Token | None:
        """The live token with this value, or ``None``."""
        with self.lock:
            token = self.tokens.get(value)
        if token is None or token.expires <= time.time():
            return None
        return token

    def expire_tokens(self) -> None:
        """Make every token handed out so far expire now (to test re-authentication)."""
        with self.lock:
            for token in self.tokens.values():
                token.expires = 0

    def new_integration(self, fields: dict[str, Any], base_url: str) -> dict[str, Any]:
        integration_id = str(uuid.uuid4())
        stamp = now_iso()
        record = {
            "id": integration_id,
            "type": "integration",
            "enabled": False,
            **fields,
            "links": {"self": f"{base_url}/v2/integrations/{integration_id}"},
            "meta": {"timestamps": {"created_at": stamp, "updated_at": stamp}},
        }
        with self.lock:
            self.integrations[integration_id] = record
            self.jobs[integration_id] = []
        return record

    def observers(self, trigger: str, *, exclude: str | None = None) -> list[dict[str, Any]]:
        """The integrations observing *trigger* (enabled or not): webhooks and queues (``stomp``, ``aws_sqs``)."""
        with self.lock:
            return [
                i
                for i in self.integrations.values()
                if i["id"] != exclude
                and i.get("integration_type") in QUEUE_TYPES + ("webhook",)
                and trigger in i.get("observes", ())
            ]

    def add_job(self, integration_id: str) -> dict[str, Any]:
        job = {
            "id": str(uuid.uuid4()),
            "type": "integration-job",
            "meta": {"timestamps": {"created_at": now_iso()}},
        }
        with self.lock:
            self.jobs.setdefault(integration_id, []).append(job)
        return job

    def add_log(self, log: dict[str, Any], *, trigger: str, event_id: str) -> None:
        """Keep a delivery log, as upstream serves it, and which event it delivered (known here only)."""
        with self.lock:
            self.logs.append(log)
            self.log_events[log["id"]] = (trigger, event_id)

    def take_fault(self) -> tuple[int, int | None] | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None
