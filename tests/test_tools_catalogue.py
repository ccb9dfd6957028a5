"""The catalogue follows Elastic Path's 2026 subscriptions spec: plans and products are legacy names."""

from __future__ import annotations

import pytest

from webhook_receiver import WebhookReceiver
from webhook_receiver.catalogue import LEGACY_EVENTS, OBSERVABLE_EVENTS, expand, is_known, is_legacy
from webhook_receiver.upstream.sync import sync_integration

OLD = [f"subscription-{kind}.{action}" for kind in ("plan", "product") for action in ("created", "updated", "deleted")]


def test_subscription_plans_and_products_are_legacy_names() -> None:
    for name in OLD:
        assert is_known(name) and is_legacy(name) and name in LEGACY_EVENTS and name not in OBSERVABLE_EVENTS
    assert not any(name.startswith(("subscription-plan.", "subscription-product.")) for name in expand("subscription*"))
    assert not any(name.startswith(("subscription-plan.", "subscription-product.")) for name in expand("*.created"))
    assert "subscription-offering.created" in expand("subscription-offering.*")


def test_a_wildcard_handler_does_not_observe_them_and_an_exact_one_still_syncs(moltin_client: object) -> None:
    wild = WebhookReceiver(name="wild")
    wild.on("*.deleted")(lambda e: None)
    assert not set(OLD) & set(wild.observes())
    exact = WebhookReceiver(name="exact")
    exact.on("subscription-plan.updated")(lambda e: None)  # accepted without an UnknownTriggerWarning
    assert exact.observes() == ["subscription-plan.updated"]
    from flask import Flask

    app = Flask("legacy")
    app.config["WEBHOOK_RECEIVER_SECRET_KEY"] = "a-long-enough-secret-1234"
    app.config["WEBHOOK_RECEIVER_STORE"] = "memory://"
    exact.init_app(app)
    with app.app_context():
        result = sync_integration(moltin_client, exact, "https://shop.example/webhooks/exact")  # type: ignore[arg-type]
    assert result.integration is not None and result.integration["observes"] == ["subscription-plan.updated"]


def test_a_wildcard_of_legacy_names_only_is_refused() -> None:
    with pytest.raises(ValueError, match="covers no Elastic Path event"):
        WebhookReceiver().on("subscription-plan.*")
