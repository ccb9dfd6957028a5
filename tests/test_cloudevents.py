"""Event.from_cloudevent: the queue integrations' CloudEvents become the same Event as a webhook's."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from webhook_receiver.errors import InvalidEvent
from webhook_receiver.events import REDACTED, Event


def cloudevent(**overrides: Any) -> dict[str, Any]:
    """A message as upstream's docs show one (a cart updated)."""
    body: dict[str, Any] = {
        "data": {
            "id": "a-cart-id",
            "type": "cart",
            "name": "Cart",
            "meta": {"timestamps": {"updated_at": "2021-05-17T11:31:08Z"}},
        },
        "datacontenttype": "application/json",
        "id": "9a21fb54-6c3b-432a-bade-82a60da6b59a",
        "integrationid": "e17db0d8-467b-4bf3-9c26-3dfe8b96e9d7",
        "source": "https://epcc-integration.global.ssl.fastly.net",
        "specversion": "1.0",
        "storeid": "b33e328f-31a8-4d57-b0a3-ebf1039b3756",
        "type": "cart.updated",
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize("as_bytes", [True, False])
def test_upstreams_example_becomes_the_event_handlers_know(as_bytes: bool) -> None:
    body = cloudevent()
    event = Event.from_cloudevent(json.dumps(body).encode() if as_bytes else body, transport="stomp")
    assert event.id == "9a21fb54-6c3b-432a-bade-82a60da6b59a"
    assert event.trigger == "cart.updated" and event.entity == "cart" and event.action == "updated"
    assert event.data == body["data"]
    assert event.included is None and not event.includes_elided
    assert event.store_id == "b33e328f-31a8-4d57-b0a3-ebf1039b3756"
    assert event.integration == {"id": "e17db0d8-467b-4bf3-9c26-3dfe8b96e9d7", "integration_type": "stomp"}
    assert event.source == "https://epcc-integration.global.ssl.fastly.net"
    assert event.transport == "stomp"
    assert event.updated_at is not None and event.updated_at.year == 2021
    assert event.irregular == ()
    assert event.raw["receivedvia"] == "stomp"


def test_a_webhook_event_says_so() -> None:
    event = Event.from_dict({"id": "e1", "triggered_by": "order.paid"})
    assert event.transport == "webhook" and event.source is None and not event.includes_elided


def test_the_transport_survives_the_store() -> None:
    event = Event.from_cloudevent(json.dumps(cloudevent()).encode(), transport="sqs", attempt=3)
    stored = json.loads(event.raw_json)
    assert stored["receivedvia"] == "sqs"
    again = Event.from_stored(stored)
    assert dataclasses.replace(again, attempt=3) == event  # a store counts attempts itself
    assert again.transport == "sqs" and again.integration["integration_type"] == "aws_sqs"
    assert event.attempt == 3


def test_a_deleted_resource() -> None:
    event = Event.from_cloudevent(cloudevent(type="product.deleted", data={"id": "p1", "type": "product"}))
    assert event.is_deleted and event.data == {"id": "p1", "type": "product"}
    assert event.transport == "queue"  # built without saying where it came from


def test_elided_includes_are_told_apart() -> None:
    elided = Event.from_cloudevent(cloudevent(included={"meta": {"includes_elided": True}}))
    assert elided.includes_elided
    full = Event.from_cloudevent(cloudevent(included={"items": [{"id": "i1", "type": "cart_item"}]}))
    assert not full.includes_elided and full.included == {"items": [{"id": "i1", "type": "cart_item"}]}


@pytest.mark.parametrize("as_bytes", [True, False])
def test_secrets_are_redacted_as_in_a_webhook(as_bytes: bool) -> None:
    body = cloudevent(data={"id": "i1", "type": "integration", "configuration": {"password": "hunter2-stomp"}})
    body["aws_secret_access_key"] = "AKIA-secret-value"
    event = Event.from_cloudevent(json.dumps(body).encode() if as_bytes else body)
    assert event.data["configuration"]["password"] == REDACTED
    assert event.raw["aws_secret_access_key"] == REDACTED
    assert b"hunter2" not in event.raw_json and b"AKIA-secret" not in event.raw_json
    assert body["aws_secret_access_key"] == "AKIA-secret-value"  # the caller's dict is not modified


@pytest.mark.parametrize(
    "overrides, irregular",
    [
        ({"specversion": "0.3"}, "specversion"),
        ({"source": 42}, "source"),
        ({"storeid": ["b33"]}, "storeid"),
        ({"integrationid": 7}, "integrationid"),
        ({"datacontenttype": "text/plain"}, "datacontenttype"),
        ({"data_base64": "eyJpZCI6MX0="}, "data_base64"),
    ],
)
def test_odd_but_usable_messages_are_kept_and_listed(overrides: dict[str, Any], irregular: str) -> None:
    event = Event.from_cloudevent(cloudevent(**overrides))
    assert event.irregular == (irregular,)
    for key, value in overrides.items():
        assert event.raw[key] == value


def test_unknown_fields_are_kept() -> None:
    event = Event.from_cloudevent(cloudevent(time="2026-01-01T00:00:00Z", traceparent="00-abc"))
    assert event.raw["time"] == "2026-01-01T00:00:00Z" and event.raw["traceparent"] == "00-abc"
    assert event.irregular == ()


def test_without_specversion_it_is_still_an_event() -> None:
    body = cloudevent()
    del body["specversion"], body["source"]
    event = Event.from_cloudevent(body)
    assert event.trigger == "cart.updated" and event.irregular == ("specversion",)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe\xfd", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object, not an array"),
        (json.dumps({"type": "cart.updated"}).encode(), "no id"),
        (json.dumps({"id": "e1"}).encode(), "no type"),
        (json.dumps({"id": "e1", "type": "Not An Event"}).encode(), "type is not an event name"),
        (json.dumps({"id": "e1", "type": 5}).encode(), "type is not an event name"),
        (json.dumps({"id": "e\n1", "type": "cart.updated"}).encode(), "control character"),
        (json.dumps({"id": "x" * 201, "type": "cart.updated"}).encode(), "longer than"),
        # the store would read it back as a webhook's body, run as its triggered_by's handlers
        (json.dumps({"id": "e1", "type": "order.paid", "triggered_by": "order.created"}).encode(), "triggered_by"),
    ],
)
def test_what_is_not_an_elastic_path_cloudevent_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        Event.from_cloudevent(body)


def test_a_webhook_body_still_rebuilds_as_a_webhook() -> None:
    event = Event.from_stored({"id": "e1", "triggered_by": "order.paid", "type": "odd"})
    assert event.transport == "webhook" and event.trigger == "order.paid"


def test_a_bytes_like_body_is_read_as_its_bytes() -> None:
    body = json.dumps({"specversion": "1.0", "id": "bl-1", "type": "order.paid", "data": {"id": "o"}}).encode()
    for given in (bytearray(body), memoryview(body)):
        event = Event.from_cloudevent(given, transport="sqs")
        assert (event.id, event.trigger, event.data) == ("bl-1", "order.paid", {"id": "o"})
    with pytest.raises(InvalidEvent, match="must be a JSON object, not an array"):
        Event.from_cloudevent(bytearray(b"[1, 2]"))


def test_data_sent_as_a_json_string_is_redacted_inside_and_listed_as_irregular() -> None:
    """Upstream's data is the resource, an object; one sent as a JSON string, as a webhook's resources is,
    kept a secret field in it in clear (review 33a)."""
    message = {
        "specversion": "1.0",
        "id": "c1",
        "type": "integration.updated",
        "source": "https://api.moltin.com",
        "datacontenttype": "application/json",
        "data": json.dumps({"configuration": {"url": "u", "secret_key": "LEAKED-VALUE-9f3e"}}),
    }
    for event in (Event.from_cloudevent(json.dumps(message).encode(), transport="sqs"), Event.from_cloudevent(message)):
        assert "LEAKED-VALUE-9f3e" not in event.raw_json.decode() and "LEAKED-VALUE-9f3e" not in repr(event)
        assert json.loads(event.data) == {"configuration": {"url": "u", "secret_key": REDACTED}}
        assert "data" in event.irregular
    plain = {**message, "data": '{"id": "o-1"}'}  # no secret-like name: kept as sent
    assert Event.from_cloudevent(json.dumps(plain).encode()).data == '{"id": "o-1"}'
