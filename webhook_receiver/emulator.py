"""An alias kept so that imports of the first layout work: the module is now :mod:`webhook_receiver.local.emulator`."""

from .local.emulator import *  # noqa: F401,F403
from .local.emulator import __all__  # noqa: F401
