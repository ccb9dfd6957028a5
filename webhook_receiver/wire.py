"""The wire format upstream speaks: header names, delivery bodies, and a signed delivery.

Everything that talks like upstream (the emulator, ``flask webhooks send``,
the console script, :mod:`webhook_receiver.testing`) builds on this module;
the receiver reads the same headers.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Mapping

__all__ = ["SECRET_HEADER", "TRIGGER_HEADER", "make_event", "post", "sample_resource", "signed"]

#: The header Moltin puts the integration's ``secret_key`` in.
SECRET_HEADER = "X-MOLTIN-SECRET-KEY"
#: The header Moltin puts the observable event name in.
TRIGGER_HEADER = "X-MOLTIN-INTEGRATION-TRIGGER"

_FORMS = ("resources", "payload", "both")


def _price(amount: int, currency: str = "USD") -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": currency,
        "formatted": f"${amount // 100}.{amount % 100:02d}",
    }


def _order(resource_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    item_id = str(uuid.uuid4())
    address = {
        "first_name": "Ron",
        "last_name": "Swanson",
        "line_1": "1 Sun Street",
        "city": "Pawnee",
        "postcode": "46001",
        "county": "Indiana",
        "country": "US",
    }
    order = {
        "type": "order",
        "id": resource_id,
        "status": "complete",
        "payment": "paid",
        "shipping": "unfulfilled",
        "customer": {"name": "Ron Swanson", "email": "ron@swanson.example"},
        "shipping_address": address,
        "billing_address": dict(address),
        "links": {},
        "meta": {
            "display_price": {
                "with_tax": _price(4200),
                "without_tax": _price(3500),
                "tax": _price(700),
            },
            "timestamps": {
                "created_at": "2026-11-29T10:00:00Z",
                "updated_at": "2026-11-29T10:05:00Z",
            },
        },
        "relationships": {"items": {"data": [{"type": "item", "id": item_id}]}},
    }
    included = {
        "items": [
            {
                "type": "order_item",
                "id": item_id,
                "quantity": 2,
                "product_id": str(uuid.uuid4()),
                "name": "Lagavulin 16",
                "sku": "LAG-16",
                "unit_price": _price(1750),
                "value": _price(3500),
            }
        ]
    }
    return order, included


def _product(resource_id: str) -> dict[str, Any]:
    return {
        "type": "product",
        "id": resource_id,
        "name": "Lagavulin 16",
        "slug": "lagavulin-16",
        "sku": "LAG-16",
        "manage_stock": True,
        "description": "A smoky single malt.",
        "price": [{"amount": 1750, "currency": "USD", "includes_tax": True}],
        "status": "live",
        "commodity_type": "physical",
        "meta": {"display_price": {"with_tax": _price(1750)}, "stock": {"level": 12}},
    }


def _samples(resource_id: str) -> dict[str, dict[str, Any]]:
    """Resources as upstream sends them, for entities beyond orders and products."""
    now = "2026-11-29T10:00:00Z"
    return {
        "customer": {
            "type": "customer",
            "id": resource_id,
            "name": "Ron Swanson",
            "email": "ron@swanson.example",
            "password": False,
        },
        "cart": {
            "type": "cart",
            "id": resource_id,
            "name": "Cart",
            "description": "",
            "meta": {"display_price": {"with_tax": _price(3500)}, "timestamps": {"updated_at": now}},
        },
        "file": {
            "type": "file",
            "id": resource_id,
            "file_name": "lagavulin.jpg",
            "mime_type": "image/jpeg",
            "file_size": 48213,
            "public": True,
            "link": {"href": f"https://files.example/{resource_id}.jpg"},
        },
        "transaction": {
            "type": "transaction",
            "id": resource_id,
            "reference": "ch_1ABC",
            "gateway": "stripe",
            "amount": 4200,
            "currency": "USD",
            "transaction_type": "purchase",
            "status": "complete",
        },
        "stock-transaction": {
            "type": "stock-transaction",
            "id": resource_id,
            "action": "increment",
            "product_id": str(uuid.uuid4()),
            "quantity": 5,
        },
        "currency": {
            "type": "currency",
            "id": resource_id,
            "code": "EUR",
            "exchange_rate": 0.92,
            "format": "€{price}",
            "default": False,
            "enabled": True,
        },
        "address": {
            "type": "address",
            "id": resource_id,
            "first_name": "Ron",
            "last_name": "Swanson",
            "line_1": "1 Sun Street",
            "city": "Pawnee",
            "postcode": "46001",
            "country": "US",
        },
        "integration": {
            "type": "integration",
            "id": resource_id,
            "integration_type": "webhook",
            "name": "Order shipping notification",
            "enabled": True,
            "observes": ["order.fulfilled"],
            "configuration": {"url": "https://shop.example/hooks", "secret_key": "shown-redacted"},
        },
        "account": {
            "type": "account",
            "id": resource_id,
            "name": "Pawnee Parks",
            "legal_name": "Pawnee Parks Dept",
            "meta": {"timestamps": {"created_at": now}},
        },
    }


def sample_resource(trigger: str, resource_id: str | None = None) -> tuple[dict[str, Any], Any]:
    """A resource such as upstream sends for *trigger*, and its ``included``.

    :param trigger: an event name. Orders come with customer, addresses,
        display prices and their items in ``included``; products, customers,
        carts, files, transactions, stock transactions, currencies,
        addresses, integrations and accounts get resources of their own
        shape; other entities a small generic one.
    :param resource_id: the resource's id; random when not given.
    :returns: ``(data, included)``; ``included`` is ``None`` when upstream
        sends none.
    """
    entity = trigger.rpartition(".")[0] or trigger
    resource_id = resource_id or str(uuid.uuid4())
    if entity == "order":
        return _order(resource_id)
    if entity == "product":
        return _product(resource_id), None
    samples = _samples(resource_id)
    # Some stores spell the integration events in the plural.
    sample = samples.get(entity) or samples.get(entity.removesuffix("s"))
    if sample is not None:
        return sample, None
    return {"type": entity, "id": resource_id, "name": f"Sample {entity}"}, None


def make_event(
    trigger: str,
    data: Mapping[str, Any] | None = None,
    *,
    attempt: int = 1,
    form: str = "both",
    event_id: str | None = None,
) -> dict[str, Any]:
    """A delivery body for *trigger*, shaped as upstream sends it.

    Created and updated events carry the whole resource; deleted events carry
    only ``{"id", "type"}``. The ``configuration`` echo is added by
    :func:`signed`, which knows the secret.

    :param trigger: the event name, such as ``"order.paid"``.
    :param data: the affected resource; a realistic sample when not given.
    :param attempt: the delivery attempt, from 1.
    :param form: ``"resources"`` (the deprecated JSON string), ``"payload"``
        (the newer object) or ``"both"``, as upstream sends today.
    :param event_id: the event's id; random when not given.
    :raises ValueError: if *form* is not one of the three.
    """
    if form not in _FORMS:
        raise ValueError(f"form must be one of {', '.join(_FORMS)}, not {form!r}")
    included: Any = None
    if data is None:
        data, included = sample_resource(trigger)
    content: dict[str, Any]
    if trigger.endswith(".deleted"):
        content = {"id": data["id"], "type": data.get("type", trigger.rpartition(".")[0])}
    else:
        content = {"data": dict(data)}
        if included is not None:
            content["included"] = included
    body: dict[str, Any] = {
        "id": event_id or str(uuid.uuid4()),
        "triggered_by": trigger,
        "attempt": attempt,
        "integration": {
            "id": "5b0e4b5f-6f1b-4e5c-9a36-2b2c7f2b1d10",
            "integration_type": "webhook",
            "name": "webhook_receiver",
            "description": "Sample integration",
        },
    }
    if form in ("resources", "both"):
        # Deleted events send a plain object; the others a JSON string.
        body["resources"] = content if trigger.endswith(".deleted") else json.dumps(content)
    if form in ("payload", "both"):
        body["payload"] = content
    return body


def signed(
    event: Mapping[str, Any], *, secret: str | None, url: str, trigger: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a delivery of *event*, as upstream sends it.

    :param event: a body from :func:`make_event`.
    :param secret: the integration's secret, or ``None`` to send none.
    :param url: the integration's URL, echoed in ``configuration``.
    :param trigger: the trigger header; the body's ``triggered_by`` by default.
    :returns: ``(body, headers)``; the headers include the content type.
    """
    body = dict(event)
    body["configuration"] = {"url": url}
    headers = {TRIGGER_HEADER: trigger or str(event.get("triggered_by", "")), "Content-Type": "application/json"}
    if secret is not None:
        body["configuration"]["secret_key"] = secret
        headers[SECRET_HEADER] = secret
    return json.dumps(body).encode(), headers


def post(
    url: str, event: Mapping[str, Any], *, secret: str | None, trigger: str | None = None, timeout: float = 15.0
) -> Any:
    """POST a delivery of *event* to *url*, never following a redirect.

    A redirect would carry the secret to wherever it points; the caller sees
    the 3xx instead.

    :returns: the :class:`requests.Response`.
    :raises requests.RequestException: if *url* cannot be reached.
    """
    import requests

    data, headers = signed(event, secret=secret, url=url, trigger=trigger)
    return requests.post(url, data=data, timeout=timeout, allow_redirects=False, headers=headers)
