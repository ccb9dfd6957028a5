"""Parsing every body shape upstream sends into an Event, and refusing what is not one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook_receiver import Event, InvalidEvent
from webhook_receiver.catalogue import OBSERVABLE_EVENTS
from webhook_receiver.events import REDACTED, redact
from webhook_receiver.testing import make_event

ORDER = {"type": "order", "id": "o-1", "status": "complete"}


def test_resources_string_form_is_decoded() -> None:
    body = make_event("order.paid", ORDER, form="resources", event_id="e-1")
    event = Event.from_dict(body)
    assert event.id == "e-1"
    assert event.trigger == "order.paid"
    assert event.resources == {"data": ORDER}
    assert event.payload is None
    assert event.data == ORDER
    assert not event.is_deleted
    assert (event.entity, event.action) == ("order", "paid")


def test_payload_form() -> None:
    event = Event.from_dict(make_event("product.updated", {"type": "product", "id": "p"}, form="payload"))
    assert event.resources is None
    assert event.payload == {"data": {"type": "product", "id": "p"}}
    assert event.data == {"type": "product", "id": "p"}


def test_both_forms_prefer_payload_and_keep_included() -> None:
    event = Event.from_dict(make_event("order.created"))
    assert event.data["type"] == "order"
    assert event.included["items"][0]["type"] == "order_item"
    assert event.resources == event.payload


def test_deleted_event_carries_id_and_type_object() -> None:
    body = make_event("product.deleted", {"id": "p-9", "type": "product"}, form="resources")
    assert body["resources"] == {"id": "p-9", "type": "product"}
    event = Event.from_dict(body)
    assert event.is_deleted
    assert event.data == {"id": "p-9", "type": "product"}
    assert event.included is None


def test_newest_form_with_store_ids_and_no_attempt() -> None:
    event = Event.from_json(json.dumps({"id": "e", "triggered_by": "order.paid", "store_id": "s", "org_id": "g"}))
    assert (event.attempt, event.store_id, event.org_id, event.data) == (1, "s", "g", None)
    assert event.integration == {}


def test_utf16_body_parses() -> None:
    body = json.dumps({"id": "e", "triggered_by": "order.paid"}).encode("utf-16")
    assert Event.from_json(body).id == "e"


def test_secret_is_redacted_everywhere() -> None:
    secret = "very-secret-value"
    integration = {"type": "integration", "configuration": {"url": "u", "secret_key": secret}}
    body = make_event("integration.updated", integration, form="both")
    body["configuration"] = {"url": "u", "secret_key": secret}
    event = Event.from_dict(body)
    assert secret not in json.dumps(event.raw)
    assert secret not in repr(event)
    assert event.raw["configuration"]["secret_key"] == REDACTED
    assert event.data["configuration"]["secret_key"] == REDACTED
    assert json.loads(event.raw["resources"])["data"]["configuration"]["secret_key"] == REDACTED
    assert body["configuration"]["secret_key"] == secret, "the caller's dict is not modified"


def test_redact_reports_whether_it_changed_anything() -> None:
    assert redact({"a": [1, {"b": 2}]}) == ({"a": [1, {"b": 2}]}, False)
    assert redact([{"client_secret": "x"}]) == ([{"client_secret": REDACTED}], True)


@pytest.mark.parametrize(
    ("body", "trigger", "message"),
    [
        (b"not json", None, "not valid JSON"),
        (b"\xff\xfe\xfa", None, "not"),
        (b"[1, 2]", None, "must be a JSON object, not an array"),
        (b"{}", None, "has no id"),
        (b'{"id": 5, "triggered_by": "order.paid"}', None, "id must be a non-empty string"),
        (b'{"id": "", "triggered_by": "order.paid"}', None, "id must be a non-empty string"),
        (b'{"id": "e"}', None, "has no triggered_by"),
        (b'{"id": "e", "triggered_by": "no spaces allowed"}', None, "not an event name"),
        (b'{"id": "e", "triggered_by": "order.paid"}', "order.created", "does not match"),
        (b"[" * 100_000, None, "nested too deeply"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body: bytes, trigger: str | None, message: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        Event.from_json(body, trigger=trigger)
    assert message in info.value.reason


@pytest.mark.parametrize(
    ("extra", "field", "attribute", "value"),
    [
        ({"attempt": 0}, "attempt", "attempt", 1),
        ({"attempt": True}, "attempt", "attempt", 1),
        ({"attempt": "two"}, "attempt", "attempt", 1),
        ({"resources": "{oops"}, "resources", "resources", "{oops"),
        ({"resources": "[1]"}, "resources", "resources", [1]),
        ({"resources": [{"id": "x"}]}, "resources", "resources", [{"id": "x"}]),
        ({"resources": 3}, "resources", "resources", 3),
        ({"payload": []}, "payload", "payload", []),
        ({"payload": "text"}, "payload", "payload", "text"),
        ({"integration": "x"}, "integration", "integration", "x"),
        ({"store_id": 1}, "store_id", "store_id", 1),
        ({"org_id": {"id": "o"}}, "org_id", "org_id", {"id": "o"}),
    ],
)
def test_odd_but_usable_bodies_are_kept_as_sent(extra: dict[str, Any], field: str, attribute: str, value: Any) -> None:
    body = {"id": "e", "triggered_by": "order.paid", **extra}
    event = Event.from_json(json.dumps(body).encode(), trigger="order.paid")
    assert event.irregular == (field,)
    assert getattr(event, attribute) == value
    assert event.raw[field] == extra[field], "kept in raw as sent"


def test_attempt_as_a_numeric_string_is_parsed() -> None:
    event = Event.from_dict({"id": "e", "triggered_by": "order.paid", "attempt": "3"})
    assert (event.attempt, event.irregular) == (3, ())


def test_an_undecodable_resources_string_that_may_hold_a_secret_is_redacted_whole() -> None:
    body = {"id": "e", "triggered_by": "order.paid", "resources": '{"secret_key": "s3cr3t", oops'}
    event = Event.from_dict(body)
    assert event.irregular == ("resources",) and event.raw["resources"] == REDACTED
    assert "s3cr3t" not in json.dumps(event.raw)


def test_overlong_id_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="longer than"):
        Event.from_dict({"id": "x" * 201, "triggered_by": "order.paid"})


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "utf-16", "utf-32-be"])
def test_secret_is_redacted_whatever_the_encoding_or_escapes(encoding: str) -> None:
    text = (
        '{"id": "e", "triggered_by": "integration.updated", "configuration": {"secret\\u005fkey": "s3"},'
        ' "resources": "{\\"data\\": {\\"client_s\\\\u0065cret\\": \\"s4\\"}}", "x": {"secret_key": "s5"}}'
    )
    event = Event.from_json(text.encode(encoding))
    dumped = json.dumps(event.raw) + json.dumps(event.data)
    for secret in ("s3", "s4", "s5"):
        assert f'"{secret}"' not in dumped
    assert event.data == {"client_secret": REDACTED}


@pytest.mark.parametrize("trigger", OBSERVABLE_EVENTS)
@pytest.mark.parametrize("form", ["resources", "payload", "both"])
def test_sample_events_for_the_whole_catalogue_parse(trigger: str, form: str) -> None:
    body = make_event(trigger, form=form)
    event = Event.from_json(json.dumps(body), trigger=trigger)
    assert event.trigger == trigger and event.attempt == 1
    assert isinstance(event.data, dict) and event.data["id"]
    assert event.is_deleted == trigger.endswith(".deleted")
    if event.is_deleted:
        assert set(event.data) == {"id", "type"}
    else:
        assert len(event.data) > 2
    if form in ("resources", "both") and not event.is_deleted:
        assert isinstance(body["resources"], str)
    assert "shown-redacted" not in json.dumps(event.raw) + json.dumps(event.data)


@pytest.mark.parametrize(
    "key",
    [
        "Secret_Key",
        "SECRET_KEY",
        "password",
        "Password",
        "aws_secret_access_key",
        "AWS_SECRET_ACCESS_KEY",
        "Client_Secret",
    ],
)
def test_secret_field_names_match_in_any_case(key: str) -> None:
    body = {
        "id": "e",
        "triggered_by": "order.paid",
        "configuration": {"url": "u", "secret_key": "echoed-secret-1"},
        "payload": {"data": {"type": "integration", "configuration": {key: "queue-secret-2"}}},
        "resources": json.dumps({"data": {"nested": [{key: "string-secret-3"}]}}),
    }
    for parse in (lambda: Event.from_json(json.dumps(body).encode()), lambda: Event.from_dict(body)):
        event = parse()
        text = json.dumps(event.raw)
        for secret in ("echoed-secret-1", "queue-secret-2", "string-secret-3"):
            assert secret not in text and secret not in json.dumps(event.resources)
        assert event.raw["payload"]["data"]["configuration"][key] == REDACTED


_WORDS = [
    "secret_key",
    "Secret_Key",
    "SECRET_KEY",
    "password",
    "PassWord",
    "client_secret",
    "aws_secret_access_key",
    "secret",
    "name",
    "id",
    "data",
    "my-secret-1",
    "passwords",
    "é",
    "key",
]
_json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(_WORDS), st.text(max_size=8))
_json_values = st.recursive(
    _json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_WORDS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    extra=st.dictionaries(st.sampled_from(_WORDS), _json_values, max_size=3),
    echo=st.sampled_from(_WORDS),
    resources=st.one_of(st.none(), _json_values),
    as_string=st.booleans(),
    ensure_ascii=st.booleans(),
)
@settings(max_examples=400, deadline=None)
def test_the_fast_redaction_agrees_with_the_thorough_one(
    extra: dict[str, Any], echo: str, resources: Any, as_string: bool, ensure_ascii: bool
) -> None:
    """Whatever the body holds (secret names in keys, in values, in the resources string, in the echoed
    secret itself, in any case, escaped or not), what the receiver keeps is the body redacted key by key."""
    body: dict[str, Any] = {
        **extra,
        "id": "e-1",
        "triggered_by": "order.paid",
        "configuration": {"url": "u", "secret_key": echo},
    }
    if resources is not None:
        body["resources"] = json.dumps({"data": resources}) if as_string else {"data": resources}
    event = Event.from_json(json.dumps(body, ensure_ascii=ensure_ascii).encode(), trigger="order.paid")
    expected, _ = redact(body)
    if isinstance(body.get("resources"), str):
        assert json.loads(event.raw["resources"]) == redact(json.loads(body["resources"]))[0]
        expected["resources"] = event.raw["resources"]
    assert event.raw == expected
    assert json.loads(event.raw_json) == event.raw, "what stores keep is the redacted body"


def test_with_a_payload_a_clean_resources_string_is_decoded_only_when_read() -> None:
    body = make_event("order.paid", ORDER, form="both", event_id="lazy")
    event = Event.from_json(json.dumps(body).encode(), trigger="order.paid")
    assert "resources" not in vars(event), "the resources string was decoded while the request was answered"
    assert event.data == ORDER and event.raw["resources"] == body["resources"]
    assert event.resources == {"data": ORDER} and event.irregular == ()
    assert event == Event.from_dict(body)


def test_with_a_payload_an_odd_resources_string_is_noted_when_read() -> None:
    body = {"id": "odd", "triggered_by": "order.paid", "payload": {"data": ORDER}, "resources": "{oops"}
    event = Event.from_json(json.dumps(body).encode())
    assert event.data == ORDER
    assert event.irregular == ("resources",) and event.resources == "{oops"


BOM = "\ufeff"


@pytest.mark.parametrize("as_bytes", [True, False])
@pytest.mark.parametrize("cloudevent", [False, True], ids=["webhook", "cloudevent"])
def test_a_body_that_starts_with_a_byte_order_mark_is_kept_without_it(
    tmp_path: Any, as_bytes: bool, cloudevent: bool
) -> None:
    """json reads past a BOM in bytes: the event was taken (202, or its message acknowledged), and the body
    kept with it, BOM first, did not read back from the store, so the event failed without running."""
    from webhook_receiver.stores.sqlite import SQLiteStore

    if cloudevent:
        body = {"specversion": "1.0", "id": "bom-1", "type": "order.paid", "data": ORDER}
    else:
        body = {"id": "bom-1", "triggered_by": "order.paid", "attempt": 1, "payload": {"data": ORDER}}
    text = BOM + json.dumps(body)
    given = text.encode() if as_bytes else text
    event = Event.from_cloudevent(given, transport="stomp") if cloudevent else Event.from_json(given)
    assert not event.raw_json.startswith(BOM.encode())
    store = SQLiteStore(str(tmp_path / "events.sqlite3"))
    store.accept(event)
    claim = store.claim_due()
    assert claim is not None
    again = Event.from_stored(claim.raw)  # type: ignore[arg-type]
    assert (again.id, again.trigger, again.data) == ("bom-1", "order.paid", ORDER)


def test_a_payload_sent_as_a_json_string_is_redacted_inside_it_too() -> None:
    """Upstream sends ``payload`` as an object; one sent as a JSON string, as ``resources`` is, is odd but kept,
    and a secret field inside it never reaches the store, a log or a handler in clear."""
    inner = {"data": {"type": "integration", "configuration": {"url": "u", "secret_key": "s3cr3t-in-payload"}}}
    body = {"id": "e", "triggered_by": "integration.updated", "payload": json.dumps(inner)}
    for event in (Event.from_json(json.dumps(body).encode()), Event.from_dict(body)):
        assert "s3cr3t-in-payload" not in json.dumps(event.raw) and "s3cr3t-in-payload" not in event.raw_json.decode()
        assert "s3cr3t-in-payload" not in str(event.payload) and "s3cr3t-in-payload" not in repr(event)
        assert json.loads(event.raw["payload"])["data"]["configuration"] == {"url": "u", "secret_key": REDACTED}
        assert event.irregular == ("payload",) and event.payload == event.raw["payload"]


def test_a_payload_string_that_may_hold_a_secret_and_is_not_json_is_redacted_whole() -> None:
    body = {"id": "e", "triggered_by": "order.paid", "payload": '{"password": "hunter2-x", oops'}
    event = Event.from_json(json.dumps(body).encode())
    assert event.raw["payload"] == REDACTED and "hunter2-x" not in event.raw_json.decode()


def test_a_payload_string_without_a_secret_name_is_kept_as_sent() -> None:
    body = {"id": "e", "triggered_by": "order.paid", "payload": '{"data": {"id": "o-1"}}', "password": "x"}
    event = Event.from_json(json.dumps(body).encode())  # the thorough path (a secret field elsewhere)
    assert event.raw["payload"] == '{"data": {"id": "o-1"}}' and event.raw["password"] == REDACTED
