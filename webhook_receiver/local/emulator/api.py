"""The HTTP API of the Moltin stand-in: token, integrations, logs and jobs, and firing.

Envelopes, status codes and ``errors`` bodies follow upstream's; the official
JS SDK (``@moltin/sdk``) is the judge of fidelity (``tests/test_emulator_sdk.py``).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request

from ...catalogue import is_event_name, is_known, unknown_trigger
from .state import MAX_EVENTS_PER_INTEGRATION, MAX_INTEGRATIONS, EmulatorState, now_iso

if TYPE_CHECKING:
    from .firing import Firer

__all__ = ["create_api"]

INTEGRATION_TYPES = ("webhook", "aws_sqs", "stomp")
_WRITABLE = ("name", "description", "enabled", "observes", "integration_type", "configuration")
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    422: "Failed Validation",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class _Refusal(Exception):
    def __init__(
        self, status: int, detail: str | None = None, pointer: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.pointer = pointer
        self.headers = headers


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


def _errors(refusal: _Refusal) -> Response:
    error: dict[str, Any] = {"status": refusal.status, "title": _TITLES.get(refusal.status, "Error")}
    if refusal.detail:
        error["detail"] = refusal.detail
    if refusal.pointer:
        error["source"] = {"pointer": refusal.pointer}
    return _json({"errors": [error]}, refusal.status, refusal.headers)


def _page(items: list[dict[str, Any]], path: str, page_size: int, *, totals: bool = True) -> Response:
    """One page of *items*, as upstream serves it.

    :param totals: listing integrations carries ``links.first/last/next/prev``
        and ``meta`` (page and results totals); the log endpoints (2026) carry
        ``links.first/next/prev`` only, so that a client follows ``links.next``.
    """
    try:
        asked = int(request.args.get("page[limit]", page_size))
        offset = int(request.args.get("page[offset]", 0))
    except ValueError:
        raise _Refusal(400, "page[limit] and page[offset] must be integers") from None
    if not 1 <= asked <= 100 or offset < 0:
        raise _Refusal(400, "page[limit] must be 1 to 100 and page[offset] at least 0")
    limit = min(asked, page_size)
    total = len(items)
    base = f"{request.host_url.rstrip('/')}{path}?page[limit]={limit}&page[offset]="
    links = {
        "first": base + "0",
        "next": base + str(offset + limit) if offset + limit < total else None,
        "prev": base + str(max(0, offset - limit)) if offset > 0 else None,
    }
    if not totals:
        return _json({"data": items[offset : offset + limit], "links": links})
    links["current"] = base + str(offset)
    links["last"] = base + str(max(0, (total - 1) // limit * limit))
    meta = {
        "page": {"limit": limit, "offset": offset, "current": offset // limit + 1, "total": max(1, -(-total // limit))},
        "results": {"total": total},
    }
    return _json({"data": items[offset : offset + limit], "links": links, "meta": meta})


def _body() -> dict[str, Any]:
    """The ``data`` object of a JSON:API request body."""
    try:
        body = json.loads(request.get_data() or b"null")
    except ValueError:
        raise _Refusal(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict) or "data" not in body:
        raise _Refusal(422, "data is required", "data")
    data = body["data"]
    if not isinstance(data, dict):
        raise _Refusal(422, "data must be an object", "data")
    if data.get("type") != "integration":
        raise _Refusal(422, "type must be 'integration'", "data.type")
    return data


def _validate(fields: dict[str, Any], *, partial: bool, integration_type: str = "webhook") -> dict[str, Any]:
    """Check integration fields as upstream does; returns the writable ones.

    :param integration_type: the type of the integration updated (a partial update may not repeat it).
    """
    clean = {k: fields[k] for k in _WRITABLE if k in fields}
    if not partial:
        for name in ("name", "description", "integration_type", "observes", "configuration"):
            if name not in clean:
                raise _Refusal(422, f"{name} is required", f"data.{name}")
    for name in ("name", "description"):
        if name in clean and not isinstance(clean[name], str):
            raise _Refusal(422, f"{name} must be a string", f"data.{name}")
    if "enabled" in clean and not isinstance(clean["enabled"], bool):
        raise _Refusal(422, "enabled must be a boolean", "data.enabled")
    if "integration_type" in clean and clean["integration_type"] not in INTEGRATION_TYPES:
        raise _Refusal(422, "integration_type must be one of " + ", ".join(INTEGRATION_TYPES), "data.integration_type")
    if "observes" in clean:
        observes = clean["observes"]
        if not isinstance(observes, list) or not observes or not all(isinstance(o, str) and o for o in observes):
            raise _Refusal(422, "observes must be a non-empty array of event names", "data.observes")
    if "configuration" in clean:
        configuration = clean["configuration"]
        if not isinstance(configuration, dict):
            raise _Refusal(422, "configuration must be an object", "data.configuration")
        url = configuration.get("url")
        kind = clean.get("integration_type", integration_type)
        if kind in ("webhook", "aws_sqs") and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise _Refusal(422, "configuration.url must be an http(s) URL", "data.configuration.url")
        if kind == "stomp":
            _check_stomp(configuration)
        if "secret_key" in configuration and not isinstance(configuration["secret_key"], str):
            raise _Refusal(422, "configuration.secret_key must be a string", "data.configuration.secret_key")
    return clean


def _check_stomp(configuration: dict[str, Any]) -> None:
    """A ``stomp`` configuration: a destination, a non-empty list of addresses, a user name and password."""
    for name in ("destination", "username", "password"):
        if not isinstance(configuration.get(name), str) or not configuration[name]:
            raise _Refusal(422, f"configuration.{name} is required", f"data.configuration.{name}")
    addresses = configuration.get("addresses")
    if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) and a for a in addresses):
        raise _Refusal(422, "configuration.addresses must be a non-empty array", "data.configuration.addresses")


def _check_observes(record: dict[str, Any]) -> None:
    """Upstream's rules on ``observes``: five events at most, each one it knows."""
    observes = record.get("observes") or ()
    if len(observes) > MAX_EVENTS_PER_INTEGRATION:
        raise _Refusal(
            422,
            f"only {MAX_EVENTS_PER_INTEGRATION} events can be added to an integration, not {len(observes)}",
            "data.observes",
        )
    for trigger in observes:
        if not is_known(trigger):
            raise _Refusal(422, f"{trigger} is not an observable event", "data.observes")


def create_api(state: EmulatorState, firer: Firer) -> Flask:
    """The stand-in's WSGI app.

    :param state: what it remembers.
    :param firer: delivers fired events.
    """
    app = Flask("webhook_receiver.emulator")

    @app.errorhandler(_Refusal)
    def refused(refusal: _Refusal) -> Response:
        return _errors(refusal)

    @app.errorhandler(404)
    def not_found(_: Any) -> Response:
        return _errors(_Refusal(404, "no such path"))

    @app.errorhandler(405)
    def not_allowed(_: Any) -> Response:
        return _errors(_Refusal(405))

    @app.before_request
    def authenticate() -> None:
        if not request.path.startswith("/v2/"):
            return
        fault = state.take_fault()
        if fault is not None:
            status, retry_after = fault
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            raise _Refusal(status, "injected fault", headers=headers)
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        token = state.check_token(value.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise _Refusal(401, "a valid Bearer access token is required")
        if token.implicit and request.path.startswith("/v2/integrations"):
            raise _Refusal(403, "integrations need a client_credentials token, not an implicit one")

    @app.post("/oauth/access_token")
    def access_token() -> Response:
        form = request.form
        grant = form.get("grant_type")
        if grant not in ("client_credentials", "implicit"):
            raise _Refusal(422, "grant_type must be client_credentials or implicit", "grant_type")
        if form.get("client_id") != state.client_id:
            raise _Refusal(401, "invalid client_id or client_secret")
        if grant == "client_credentials" and form.get("client_secret") != state.client_secret:
            raise _Refusal(401, "invalid client_id or client_secret")
        token = state.issue_token(implicit=grant == "implicit")
        return _json(
            {
                "identifier": grant,
                "token_type": "Bearer",
                "access_token": token.value,
                "expires": int(token.expires),
                "expires_in": round(token.expires - time.time()),
            }
        )

    def integration_or_404(integration_id: str) -> dict[str, Any]:
        with state.lock:
            found = state.integrations.get(integration_id)
        if found is None:
            raise _Refusal(404, f"integration {integration_id} not found")
        return found

    @app.get("/v2/integrations")
    def list_integrations() -> Response:
        with state.lock:
            items = list(state.integrations.values())
        return _page(items, "/v2/integrations", state.page_size)

    @app.post("/v2/integrations")
    def create_integration() -> Response:
        fields = _validate(_body(), partial=False)
        with state.lock:
            if len(state.integrations) >= MAX_INTEGRATIONS:
                raise _Refusal(422, f"a store can have at most {MAX_INTEGRATIONS} integrations")
            _check_observes(fields)
            record = state.new_integration(fields, request.host_url.rstrip("/"))
        return _json({"data": record}, 201)

    @app.get("/v2/integrations/<integration_id>")
    def get_integration(integration_id: str) -> Response:
        return _json({"data": integration_or_404(integration_id)})

    @app.put("/v2/integrations/<integration_id>")
    def update_integration(integration_id: str) -> Response:
        with state.lock:
            record = integration_or_404(integration_id)
            fields = _validate(_body(), partial=True, integration_type=str(record.get("integration_type")))
            merged = {**record, **fields}
            _check_observes(merged)
            record.update(fields)
            record["meta"]["timestamps"]["updated_at"] = now_iso()
        return _json({"data": record})

    @app.delete("/v2/integrations/<integration_id>")
    def delete_integration(integration_id: str) -> Response:
        with state.lock:
            integration_or_404(integration_id)
            del state.integrations[integration_id]
        return Response(status=204)

    @app.get("/v2/integrations/logs")
    def all_logs() -> Response:
        with state.lock:
            logs = list(reversed(state.logs))
        return _page(logs, "/v2/integrations/logs", state.page_size, totals=False)

    @app.get("/v2/integrations/<integration_id>/logs")
    def integration_logs(integration_id: str) -> Response:
        integration_or_404(integration_id)
        with state.lock:
            logs = [
                log
                for log in reversed(state.logs)
                if log["relationships"]["integration"]["data"]["id"] == integration_id
            ]
        return _page(logs, f"/v2/integrations/{integration_id}/logs", state.page_size, totals=False)

    @app.get("/v2/integrations/<integration_id>/jobs")
    def integration_jobs(integration_id: str) -> Response:
        integration_or_404(integration_id)
        with state.lock:
            jobs = list(reversed(state.jobs.get(integration_id, [])))
        return _page(jobs, f"/v2/integrations/{integration_id}/jobs", state.page_size)

    @app.get("/v2/integrations/<integration_id>/jobs/<job_id>/logs")
    def job_logs(integration_id: str, job_id: str) -> Response:
        integration_or_404(integration_id)
        with state.lock:
            if not any(job["id"] == job_id for job in state.jobs.get(integration_id, [])):
                raise _Refusal(404, f"job {job_id} not found")
            logs = [log for log in reversed(state.logs) if log["relationships"]["job"]["data"]["id"] == job_id]
        return _page(logs, f"/v2/integrations/{integration_id}/jobs/{job_id}/logs", state.page_size, totals=False)

    @app.post("/emulator/fire")
    def fire() -> Response:
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            raise _Refusal(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("trigger"), str):
            raise _Refusal(422, "trigger is required", "trigger")
        data = body.get("data")
        if data is not None and not isinstance(data, dict):
            raise _Refusal(422, "data must be an object", "data")
        trigger = body["trigger"]
        if not is_event_name(trigger):
            raise _Refusal(422, f"{trigger!r} is not an event name, such as order.paid", "trigger")
        if not is_known(trigger):  # upstream fires only the events it lists
            raise _Refusal(422, unknown_trigger(trigger), "trigger")
        fired = firer.fire(trigger, data)
        answer: dict[str, Any] = {"event_id": fired.event_id, "deliveries": len(fired.jobs)}
        if not fired.jobs:  # say why, rather than leave the caller waiting for a delivery
            if state.observers(trigger):
                answer["reason"] = f"every integration observing {trigger} is disabled"
            else:
                answer["reason"] = (
                    f"no integration observes {trigger}: `flask webhooks sync` registers one for your handlers"
                )
        return _json({"data": answer}, 202)

    return app
