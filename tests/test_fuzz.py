"""Arbitrary headers and bodies: never a 5xx, never a handler call without the right secret."""

from __future__ import annotations

import json
import tempfile
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.testing import make_event

SECRET = "fuzz-secret-0123456789"

receiver = WebhookReceiver()
calls: list[str] = []


@receiver.on("*")
def record(event: Event) -> None:
    calls.append(event.id)


app = Flask(__name__, instance_path=tempfile.mkdtemp(prefix="whr-fuzz-"))
app.config.update(
    WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
    WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH=4096,
    WEBHOOK_RECEIVER_STORE="sqlite:///fuzz.sqlite3",
)
receiver.init_app(app)

header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@st.composite
def bodies(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "event", "mutated", "any-id"]))
    if kind == "bytes":
        return bytes(draw(st.binary(max_size=300)))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    event = make_event(
        draw(st.sampled_from(["order.paid", "product.deleted", "cart.updated"])),
        form=draw(st.sampled_from(["resources", "payload", "both"])),
    )
    if kind == "mutated":
        key = draw(st.sampled_from(sorted(event)))
        event[key] = draw(json_values)
    if kind == "any-id":  # every code point, lone surrogates and controls included, escaped by json.dumps
        event["id"] = draw(
            st.text(
                st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()), min_size=1, max_size=12
            )
        )
    return json.dumps(event).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
    secret=st.one_of(st.none(), st.just(SECRET), header_text),
    trigger=st.one_of(st.none(), st.sampled_from(["order.paid", "product.deleted", "cart.updated"]), header_text),
    content_type=st.one_of(
        st.none(), st.sampled_from(["application/json", "text/plain", "application/xml"]), header_text
    ),
    body=bodies(),
)
def test_no_5xx_and_no_unverified_handler_call(
    method: str, secret: str | None, trigger: str | None, content_type: str | None, body: bytes
) -> None:
    headers = {}
    if secret is not None:
        headers["X-MOLTIN-SECRET-KEY"] = secret
    if trigger is not None:
        headers["X-MOLTIN-INTEGRATION-TRIGGER"] = trigger
    if content_type is not None:
        headers["Content-Type"] = content_type
    before = len(calls)
    response = app.test_client().open("/webhooks/moltin", method=method, data=body, headers=headers)
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.is_json
    if secret != SECRET:
        assert len(calls) == before
        assert response.status_code in (401, 405, 413)
    if len(calls) > before:
        assert response.status_code == 200
