"""An alias kept so that imports of the first layout work: the module is now :mod:`webhook_receiver.upstream.sync`."""

from .upstream.sync import *  # noqa: F401,F403
from .upstream.sync import __all__  # noqa: F401
