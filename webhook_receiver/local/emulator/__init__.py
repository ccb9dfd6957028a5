"""A local stand-in for the Moltin API that really delivers webhooks, for tests and demos."""

from .firing import Fired, Firer
from .server import Emulator, is_loopback
from .state import EmulatorState

__all__ = ["Emulator", "EmulatorState", "Fired", "Firer", "is_loopback"]
