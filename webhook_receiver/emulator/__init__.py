"""A local stand-in for the Moltin API that really delivers webhooks, for tests and demos."""
from .firing import Fired, Firer
from .server import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Emulator
from .state import EmulatorState

__all__ = ["DEFAULT_CLIENT_ID", "DEFAULT_CLIENT_SECRET", "Emulator", "EmulatorState", "Fired", "Firer"]
