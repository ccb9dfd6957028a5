"""The ``flask webhooks`` command group, added to each app by ``init_app``."""

from . import consume, health, listen, local, operations, upstream  # noqa: F401  (each module adds its commands to the group)
from .group import webhooks_cli

__all__ = ["webhooks_cli"]
