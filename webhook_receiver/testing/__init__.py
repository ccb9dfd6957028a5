"""Helpers to test webhook handlers: realistic delivery bodies and signed deliveries.

::

    from webhook_receiver.testing import deliver, make_event

    def test_ship(client):
        response = deliver(client, make_event("order.paid"), secret="s3cret")
        assert response.status_code == 200

:mod:`webhook_receiver.testing.store_contract` holds the tests every event
store passes, for a store of your own to run too.
"""

from ..wire import make_event, sample_resource
from .client import WebhookClient, deliver
from .isolation import own_stores

__all__ = ["WebhookClient", "deliver", "make_event", "own_stores", "sample_resource"]
