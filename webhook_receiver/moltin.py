"""An alias kept so that imports of the first layout work: the module is now :mod:`webhook_receiver.upstream.client`."""

from .upstream.client import *  # noqa: F401,F403
from .upstream.client import __all__  # noqa: F401
