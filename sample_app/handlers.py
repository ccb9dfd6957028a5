"""The sample shop's webhook handlers.

* ``order.paid``: record the payment and queue the order for packing;
* ``order.fulfilled``: write the "Order shipping notification" e-mail of
  Moltin's own example to the outbox;
* ``product.deleted``: take the product out of the search index.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import current_app

from webhook_receiver import Event, WebhookReceiver

from .activity import record

logger = logging.getLogger("sample_app")

#: The shop's receiver; ``create_app`` sets it up on each app.
receiver = WebhookReceiver()


def _order_total(order: Any) -> str:
    try:
        return str(order["meta"]["display_price"]["with_tax"]["formatted"])
    except (KeyError, TypeError):
        return "?"


@receiver.on("order.paid")
def record_payment(event: Event) -> None:
    """Record the payment and queue the order for packing."""
    order = event.data or {}
    total = _order_total(order)
    logger.info("order %s paid (%s): queued for packing", order.get("id"), total)
    record("payment_recorded", event=event.id, order=order.get("id"), total=total)


@receiver.on("order.fulfilled")
def send_shipping_notification(event: Event) -> None:
    """Write the shipping notification e-mail for the customer to the outbox."""
    order = event.data or {}
    customer = order.get("customer") or {}
    email = customer.get("email", "customer@example.com")
    if current_app.config.get("SAMPLE_FLAKY_MAIL") and event.attempt == 1:
        # The pretend mail server times out once per e-mail: upstream retries.
        raise ConnectionError("the mail server did not answer (SAMPLE_FLAKY_MAIL)")
    path = os.path.join(current_app.config["SAMPLE_OUTBOX"], f"shipping-{order.get('id')}.eml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(
            f"To: {email}\nSubject: Your order has shipped\n\n"
            f"Hello {customer.get('name', 'there')},\n\nyour order {order.get('id')} is on its way."
            "\nAs a thank you, here is 10% off your next order: THANKYOU10\n"
        )
    logger.info("order %s fulfilled: shipping notification to %s", order.get("id"), email)
    record(
        "shipping_notification_written", event=event.id, order=order.get("id"), to=email, file=os.path.basename(path)
    )


@receiver.on("product.deleted")
def remove_from_search(event: Event) -> None:
    """Take a deleted product out of the (pretend) search index."""
    product = event.data or {}
    logger.info("product %s deleted: removed from the search index", product.get("id"))
    record("product_unindexed", event=event.id, product=product.get("id"))
