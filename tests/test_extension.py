"""The extension: configuration, app factories, several receivers, handlers and signals."""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable

import pytest
from flask import Flask

from webhook_receiver import Event, UnknownTriggerWarning, WebhookReceiver, signals
from webhook_receiver.testing import deliver, make_event
from webhook_receiver.verify import derive_secrets

from .conftest import SECRET, new_app


def bare_app(**config: Any) -> Flask:
    return new_app(**config)


def test_no_secret_refuses_to_start() -> None:
    with pytest.raises(RuntimeError) as info:
        WebhookReceiver(bare_app())
    message = str(info.value)
    assert "WEBHOOK_RECEIVER_SECRET_KEY" in message
    assert "SECRET_KEY" in message and "WEBHOOK_RECEIVER_ALLOW_NO_SECRET" in message


def test_explicit_opt_out_warns_loudly_and_accepts_anything(caplog: pytest.LogCaptureFixture) -> None:
    receiver = WebhookReceiver()
    seen: list[str] = []
    receiver.on("order.paid")(lambda event: seen.append(event.id))
    with caplog.at_level(logging.WARNING, logger="webhook_receiver"):
        app = bare_app(WEBHOOK_RECEIVER_ALLOW_NO_SECRET=True)
        receiver.init_app(app)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "WITHOUT checking a secret" in caplog.records[0].getMessage()
    response = deliver(app.test_client(), make_event("order.paid", event_id="x"), secret=None)
    assert response.status_code == 200 and seen == ["x"]
    with pytest.raises(RuntimeError, match="without a secret"):
        receiver.secret_key(app)


@pytest.mark.parametrize("value", ["false", "False", "0", "no", "OFF", False])
def test_allow_no_secret_spelled_false_keeps_the_secret_required(value: Any) -> None:
    with pytest.raises(RuntimeError, match="has no secret to check deliveries against"):
        WebhookReceiver(bare_app(WEBHOOK_RECEIVER_ALLOW_NO_SECRET=value))


@pytest.mark.parametrize("value", ["true", "1", "Yes", " on "])
def test_allow_no_secret_spelled_true_opts_out(value: Any) -> None:
    app = bare_app(WEBHOOK_RECEIVER_ALLOW_NO_SECRET=value)
    WebhookReceiver(app)
    assert app.test_client().post("/webhooks/moltin").status_code == 400, "no secret header needed"


@pytest.mark.parametrize(("value", "kind"), [("flase", "str"), (2, "int"), (None, "NoneType"), ("", "str")])
def test_a_boolean_setting_of_another_spelling_is_refused(value: Any, kind: str) -> None:
    with pytest.raises(RuntimeError, match=f"WEBHOOK_RECEIVER_ALLOW_NO_SECRET must be True or False.*type {kind}$"):
        WebhookReceiver(bare_app(WEBHOOK_RECEIVER_ALLOW_NO_SECRET=value))


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("s\u00e9cret-with-an-accent-1234", "not printable ASCII"),
        ("tab\tinside-the-secret-1234567", "not printable ASCII"),
        (" padded-secret-value-12345678", "whitespace"),
        ("padded-secret-value-12345678\n", "not printable ASCII"),
        ("padded-secret-value-12345678 ", "whitespace"),
        ("   ", "whitespace"),
    ],
)
def test_secrets_that_cannot_travel_in_a_header_are_refused(secret: str, message: str) -> None:
    with pytest.raises(RuntimeError, match=message) as info:
        WebhookReceiver(bare_app(WEBHOOK_RECEIVER_SECRET_KEY=secret))
    assert not secret.strip() or secret.strip() not in str(info.value), "the secret is not in the message"
    assert "secrets.token_urlsafe" in str(info.value)
    with pytest.raises(RuntimeError, match="secret 2 of"):
        WebhookReceiver(bare_app(WEBHOOK_RECEIVER_SECRET_KEY=["a-good-old-secret-123456", secret]))


def test_a_short_secret_warns_and_says_how_to_make_a_good_one() -> None:
    from webhook_receiver import WeakSecretWarning

    with pytest.warns(WeakSecretWarning, match="shorter than 16 characters.*secrets.token_urlsafe"):
        WebhookReceiver(bare_app(WEBHOOK_RECEIVER_SECRET_KEY="x"))


@pytest.mark.parametrize("value", ["", [], [""], 42, ["ok", 3]])
def test_malformed_secret_setting_is_refused(value: Any) -> None:
    with pytest.raises(RuntimeError, match="WEBHOOK_RECEIVER_SECRET_KEY"):
        WebhookReceiver(bare_app(WEBHOOK_RECEIVER_SECRET_KEY=value))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("WEBHOOK_RECEIVER_URL", "no-slash"),
        ("WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH", 0),
        ("WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH", "1MB"),
        ("WEBHOOK_RECEIVER_STORE", "mongodb://nope"),
    ],
)
def test_malformed_settings_are_refused(key: str, value: Any) -> None:
    with pytest.raises(RuntimeError, match=key):
        WebhookReceiver(bare_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, **{key: value}))


def test_rotation_accepts_every_listed_secret() -> None:
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda event: None)
    app = bare_app(WEBHOOK_RECEIVER_SECRET_KEY=["old-secret", "new-secret"])
    receiver.init_app(app)
    client = app.test_client()
    assert deliver(client, make_event("order.paid"), secret="old-secret").status_code == 200
    assert deliver(client, make_event("order.paid"), secret="new-secret").status_code == 200
    assert deliver(client, make_event("order.paid"), secret="other").status_code == 401
    assert receiver.secret_key(app) == "new-secret"


def test_secret_derived_from_flask_secret_key_and_fallbacks() -> None:
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda event: None)
    app = bare_app(SECRET_KEY="flask-new", SECRET_KEY_FALLBACKS=["flask-old"])
    receiver.init_app(app)
    derived = receiver.secret_key(app)
    assert derived == derive_secrets(["flask-new"], salt="moltin")[0]
    assert "flask-new" not in derived and len(derived) == 43
    old = derive_secrets(["flask-old"], salt="moltin")[0]
    client = app.test_client()
    assert deliver(client, make_event("order.paid"), secret=derived).status_code == 200
    assert deliver(client, make_event("order.paid"), secret=old).status_code == 200
    assert deliver(client, make_event("order.paid"), secret="flask-new").status_code == 401


def test_derived_secrets_differ_per_receiver_name() -> None:
    assert derive_secrets(["k"], salt="moltin") != derive_secrets(["k"], salt="other")
    assert derive_secrets(["k"], salt="moltin") == derive_secrets([b"k"], salt="moltin")


def test_explicit_secret_wins_over_derived() -> None:
    app = bare_app(SECRET_KEY="flask", WEBHOOK_RECEIVER_SECRET_KEY="explicit")
    receiver = WebhookReceiver(app)
    assert receiver.secret_key(app) == "explicit"


def test_constructor_arguments_win_over_config() -> None:
    receiver = WebhookReceiver(url="/hooks/here", secret_key="from-constructor")
    receiver.on("order.paid")(lambda event: None)
    app = bare_app(WEBHOOK_RECEIVER_SECRET_KEY="from-config", WEBHOOK_RECEIVER_URL="/from/config")
    receiver.init_app(app)
    client = app.test_client()
    response = deliver(client, make_event("order.paid"), secret="from-constructor", path="/hooks/here")
    assert response.status_code == 200
    assert deliver(client, make_event("order.paid"), secret="from-config", path="/hooks/here").status_code == 401
    assert client.post("/from/config").status_code == 404


def test_config_url_is_used() -> None:
    app = bare_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_URL="/in/config/")
    WebhookReceiver(app)
    assert app.test_client().post("/in/config").status_code == 401


def test_handlers_survive_many_app_factories() -> None:
    receiver = WebhookReceiver()
    seen: list[str] = []

    @receiver.on("order.paid")
    def record(event: Event) -> None:
        seen.append(event.id)

    for n in range(3):
        app = bare_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
        receiver.init_app(app)
        deliver(app.test_client(), make_event("order.paid", event_id=f"e{n}"), secret=SECRET)
    assert seen == ["e0", "e1", "e2"]


def test_init_app_twice_on_one_app_is_refused_with_the_right_advice() -> None:
    app = bare_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver = WebhookReceiver(app)
    with pytest.raises(RuntimeError, match="already set up on this app: call init_app once per app"):
        receiver.init_app(app)
    with pytest.raises(RuntimeError, match=r"another webhook receiver named 'moltin'.*WebhookReceiver\(name="):
        WebhookReceiver().init_app(app)


def test_two_receivers_in_one_app() -> None:
    shop = WebhookReceiver(name="shop", secret_key="shop-secret")
    outlet = WebhookReceiver(name="outlet", url="/hooks/outlet", secret_key="outlet-secret")
    seen: list[tuple[str, str]] = []
    shop.on("order.paid")(lambda event: seen.append(("shop", event.id)))
    outlet.on("order.paid")(lambda event: seen.append(("outlet", event.id)))
    app = bare_app()
    shop.init_app(app)
    outlet.init_app(app)
    client = app.test_client()
    assert (
        deliver(client, make_event("order.paid", event_id="1"), secret="shop-secret", path="/webhooks/shop").status_code
        == 200
    )
    assert (
        deliver(
            client, make_event("order.paid", event_id="2"), secret="outlet-secret", path="/hooks/outlet"
        ).status_code
        == 200
    )
    assert (
        deliver(client, make_event("order.paid", event_id="3"), secret="shop-secret", path="/hooks/outlet").status_code
        == 401
    )
    assert seen == [("shop", "1"), ("outlet", "2")]


def test_blueprint_mounted_by_hand() -> None:
    receiver = WebhookReceiver(secret_key=SECRET)
    seen: list[str] = []
    receiver.on("order.paid")(lambda event: seen.append(event.id))
    app = bare_app()
    app.register_blueprint(receiver.blueprint, url_prefix="/custom")
    response = deliver(app.test_client(), make_event("order.paid", event_id="b"), secret=SECRET, path="/custom")
    assert response.status_code == 200 and seen == ["b"]
    with app.test_request_context():
        from flask import url_for

        assert url_for("webhook_receiver_moltin.receive") == "/custom"


def test_blueprint_mounted_by_hand_still_needs_a_secret() -> None:
    with pytest.raises(RuntimeError, match="no secret"):
        bare_app().register_blueprint(WebhookReceiver().blueprint, url_prefix="/x")


def test_handlers_run_in_registration_order_with_wildcards(receiver: WebhookReceiver, send: Callable[..., Any]) -> None:
    order: list[str] = []
    receiver.on("*")(lambda e: order.append("any"))
    receiver.on("order.paid", name="exact")(lambda e: order.append("exact"))
    receiver.on("order.*", name="entity")(lambda e: order.append("entity"))
    receiver.on("*.deleted", name="deletions")(lambda e: order.append("deletions"))
    receiver.on("product.*", name="product")(lambda e: order.append("product"))
    send(make_event("order.paid"))
    assert order == ["any", "exact", "entity"]
    order.clear()
    send(make_event("product.deleted"))
    assert order == ["any", "deletions", "product"]


def test_one_handler_for_several_events(receiver: WebhookReceiver, send: Callable[..., Any]) -> None:
    seen: list[str] = []

    @receiver.on("order.paid", "order.fulfilled")
    def ship(event: Event) -> None:
        seen.append(event.trigger)

    send(make_event("order.paid"))
    send(make_event("order.fulfilled"))
    send(make_event("order.created"))
    assert seen == ["order.paid", "order.fulfilled"]


def test_on_returns_the_function_and_stacks(receiver: WebhookReceiver) -> None:
    def fn(event: Event) -> None: ...

    assert receiver.on("order.paid", name="a")(fn) is fn
    assert receiver.on("order.created", name="b")(fn) is fn
    assert [h.name for h in receiver.handlers] == ["a", "b"]


def test_handler_names_must_be_unique(receiver: WebhookReceiver) -> None:
    def fn(event: Event) -> None: ...

    receiver.on("order.paid")(fn)
    with pytest.raises(ValueError, match="already registered"):
        receiver.on("order.created")(fn)


@pytest.mark.parametrize("bad", ["", "order paid", "order.p@id", "../x"])
def test_malformed_event_names_are_refused(receiver: WebhookReceiver, bad: str) -> None:
    with pytest.raises(ValueError, match="not an event name"):
        receiver.on(bad)


def test_on_needs_a_name(receiver: WebhookReceiver) -> None:
    with pytest.raises(ValueError):
        receiver.on()
    with pytest.raises(TypeError):
        receiver.on(42)  # type: ignore[arg-type]


def test_unknown_event_names_warn_but_are_kept(receiver: WebhookReceiver, send: Callable[..., Any]) -> None:
    seen: list[str] = []
    with pytest.warns(UnknownTriggerWarning, match=r"'order.payed' is not a known .*did you mean order.paid\?"):
        receiver.on("order.payed")(lambda e: seen.append("typo"))
    with pytest.warns(UnknownTriggerWarning, match="did you mean"):
        receiver.on("wishlist.created", name="not-custom")(lambda e: seen.append("not-custom"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # listed, legacy and custom API events need no warning
        receiver.on(
            "order.paid",
            "customer.*",
            "*",
            "subscription.canceled",
            "brand.created",
            "wishlist_ext.created",
            name="known",
        )(lambda e: None)
        receiver.on("wishlist_ext.*", name="custom")(lambda e: seen.append("custom"))
    send(make_event("wishlist_ext.created"))
    assert seen == ["custom"]


@pytest.mark.parametrize("pattern", ["wishlist.*", "ordr.*", "*.payed"])
def test_a_wildcard_that_covers_no_event_is_refused(receiver: WebhookReceiver, pattern: str) -> None:
    with pytest.raises(ValueError, match="covers no Elastic Path event"):
        receiver.on(pattern)


def test_the_catalogue_is_upstreams_list() -> None:
    """tests/data/epcc-observable-events.txt is a copy of Elastic Path's lists, with their sources."""
    from pathlib import Path

    from webhook_receiver.catalogue import LEGACY_EVENTS, OBSERVABLE_EVENTS, is_known

    listed = [
        line.strip()
        for line in (Path(__file__).parent / "data" / "epcc-observable-events.txt").open()
        if line.strip() and not line.startswith("#")
    ]
    assert sorted(listed) == list(OBSERVABLE_EVENTS)
    assert not LEGACY_EVENTS & set(OBSERVABLE_EVENTS)
    for wrong in ("integrations.created", "subscription.updated", "subscription.deleted", "wishlist.created"):
        assert not is_known(wrong)
    assert is_known("wishlist_ext.deleted") and not is_known("Wishlist_ext.deleted")


def test_signal_receivers_are_handlers(receiver: WebhookReceiver, app: Flask, send: Callable[..., Any]) -> None:
    calls: list[tuple[Any, str]] = []

    def first(sender: Any, event: Event) -> None:
        calls.append((sender, "first"))

    def second(sender: Any, event: Event) -> None:
        calls.append((sender, "second"))

    receiver.on("order.paid", name="decorated")(lambda e: calls.append((None, "decorated")))
    receiver.signal("order.paid").connect(first, weak=False)
    receiver.signal("order.paid").connect(second, weak=False)
    assert receiver.signal("order.paid") is receiver.signal("order.paid")
    assert send(make_event("order.paid")).get_json()["status"] == "processed"
    assert calls == [(None, "decorated"), (app, "first"), (app, "second")]


def test_failing_signal_receiver_is_retried_alone(receiver: WebhookReceiver, send: Callable[..., Any]) -> None:
    calls: list[str] = []
    state = {"fail": True}

    def flaky(sender: Any, event: Event) -> None:
        calls.append("flaky")
        if state["fail"]:
            raise RuntimeError("boom")

    def steady(sender: Any, event: Event) -> None:
        calls.append("steady")

    receiver.signal("order.paid").connect(flaky, weak=False)
    receiver.signal("order.paid").connect(steady, weak=False)
    assert send(make_event("order.paid", event_id="s")).status_code == 500
    state["fail"] = False
    assert send(make_event("order.paid", event_id="s")).status_code == 200
    assert calls == ["flaky", "steady", "flaky"]


def test_signal_for_one_app_only(receiver: WebhookReceiver, make_app: Callable[..., Flask]) -> None:
    one, other = make_app(), make_app()
    seen: list[Any] = []
    receiver.signal("order.paid").connect_via(one)(lambda sender, event: seen.append(sender))
    assert deliver(other.test_client(), make_event("order.paid"), secret=SECRET).get_json()["status"] == "ignored"
    assert deliver(one.test_client(), make_event("order.paid"), secret=SECRET).get_json()["status"] == "processed"
    assert seen == [one]


def test_signal_needs_an_exact_name(receiver: WebhookReceiver) -> None:
    with pytest.raises(ValueError, match="exact event name"):
        receiver.signal("order.*")


def test_lifecycle_signals(receiver: WebhookReceiver, app: Flask, send: Callable[..., Any]) -> None:
    seen: list[tuple[str, Any]] = []

    @receiver.on("order.paid")
    def fails(event: Event) -> None:
        raise KeyError("sku")

    @receiver.on("product.updated")
    def works(event: Event) -> None:
        pass

    def on_received(sender: Any, event: Event, receiver: WebhookReceiver) -> None:
        seen.append(("received", event.trigger))

    def on_handled(sender: Any, event: Event, receiver: WebhookReceiver) -> None:
        seen.append(("handled", event.trigger))

    def on_failed(sender: Any, event: Event, handler: str, exception: Exception, receiver: WebhookReceiver) -> None:
        seen.append(("failed", (handler.rpartition(".")[2], type(exception))))

    def on_refused(sender: Any, reason: str, receiver: WebhookReceiver) -> None:
        seen.append(("refused", reason))

    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a broken subscriber changes no answer")

    with (
        signals.event_received.connected_to(on_received, app),
        signals.event_received.connected_to(broken, app),
        signals.event_handled.connected_to(on_handled, app),
        signals.handler_failed.connected_to(on_failed, app),
        signals.verification_failed.connected_to(on_refused, app),
    ):
        assert send(make_event("product.updated")).status_code == 200
        assert send(make_event("order.paid")).status_code == 500
        assert send(make_event("order.paid"), secret=None).status_code == 401
        assert send(make_event("order.paid"), secret="nope").status_code == 401
    assert seen == [
        ("received", "product.updated"),
        ("handled", "product.updated"),
        ("received", "order.paid"),
        ("failed", ("fails", KeyError)),
        ("refused", "missing"),
        ("refused", "mismatch"),
    ]


def test_log_line_per_delivery(
    send: Callable[..., Any], receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.on("order.paid")(lambda e: None)
    with caplog.at_level(logging.INFO, logger="webhook_receiver"):
        send(make_event("order.paid", event_id="log-1", attempt=3))
        send(make_event("order.paid"), secret="bad")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("delivery id=log-1 trigger=order.paid attempt=3 status=processed http=200 ms=")
    assert lines[1].startswith("delivery id=- trigger=order.paid attempt=- status=unauthorized http=401 ms=")


def test_repr_shows_no_secret() -> None:
    app = bare_app(WEBHOOK_RECEIVER_SECRET_KEY="hidden-value")
    receiver = WebhookReceiver(app, secret_key="hidden-value")
    for text in (repr(receiver), repr(receiver.get_config(app))):
        assert "hidden-value" not in text


def test_get_config_before_init_app_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="init_app"):
        WebhookReceiver().get_config(bare_app())


@pytest.mark.parametrize("store_url", ["memory://", None])
def test_latest_only_skips_events_older_than_one_already_handled(
    receiver: WebhookReceiver, make_app: Callable[..., Flask], store_url: str | None
) -> None:
    """Deliveries reordered: the older update of an order arrives after the newer one."""
    handled: list[str] = []
    everything: list[str] = []
    receiver.on("order.updated", latest_only=True, name="mirror")(lambda e: handled.append(e.id))
    receiver.on("order.updated", name="audit")(lambda e: everything.append(e.id))
    client = make_app(WEBHOOK_RECEIVER_STORE=store_url).test_client()

    def update(event_id: str, when: str, order_id: str = "o-1") -> Any:
        data = {"type": "order", "id": order_id, "meta": {"timestamps": {"updated_at": when}}}
        return deliver(client, make_event("order.updated", data, event_id=event_id), secret=SECRET)

    assert update("newer", "2026-11-30T10:00:05.000Z").get_json()["status"] == "processed"
    assert update("older", "2026-11-30T10:00:01.000Z").get_json()["status"] == "processed"
    assert update("other-order", "2026-11-30T09:00:00Z", order_id="o-2").status_code == 200
    assert update("newest", "2026-11-30T10:00:09.500+00:00").status_code == 200
    assert handled == ["newer", "other-order", "newest"], "the older update was skipped"
    assert everything == ["newer", "older", "other-order", "newest"], "other handlers are not guarded"
    stored = receiver.get_store(client.application).get("older")
    assert stored is not None
    skipped = stored.handlers["mirror"]
    assert skipped.ok and skipped.skipped is not None and "already handled as of 2026-11-30T10:00:05" in skipped.skipped
    assert stored.handlers["audit"].skipped is None


def test_event_updated_at() -> None:
    from datetime import datetime, timezone

    data = {"type": "order", "id": "o", "meta": {"timestamps": {"updated_at": "2018-04-30T09:35:32.202Z"}}}
    event = Event.from_dict(make_event("order.updated", data))
    assert event.updated_at == datetime(2018, 4, 30, 9, 35, 32, 202000, tzinfo=timezone.utc)
    assert Event.from_dict(make_event("order.deleted")).updated_at is None
    bad = {"type": "order", "id": "o", "meta": {"timestamps": {"updated_at": "yesterday"}}}
    assert Event.from_dict(make_event("order.updated", bad)).updated_at is None


def test_a_handler_that_cannot_take_the_event_is_refused_at_registration(receiver: WebhookReceiver) -> None:
    def paid() -> None: ...

    def two(event: Event, other: Any) -> None: ...

    def keyword_only(*, event: Event) -> None: ...

    for wrong in (paid, two, keyword_only):
        with pytest.raises(TypeError, match=f"handler .*{wrong.__name__}.* cannot be called with the event"):
            receiver.on("order.paid")(wrong)
    assert receiver.handlers == []

    def fine(event: Event, extra: int = 1) -> None: ...

    receiver.on("order.paid")(fine)
    receiver.on("order.paid", name="star")(lambda *args: None)
    assert len(receiver.handlers) == 2
