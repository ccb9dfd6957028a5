"""A sample shop back office that receives Moltin webhooks with :mod:`webhook_receiver`."""

from .app import create_app
from .handlers import receiver

__all__ = ["create_app", "receiver"]
