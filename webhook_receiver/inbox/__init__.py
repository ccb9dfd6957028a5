"""The inbox page: an opt-in blueprint listing stored events, with replay, in the user's own Flask app."""

from .access import InboxSettings, read_settings
from .blueprint import mount_inbox

__all__ = ["InboxSettings", "mount_inbox", "read_settings"]
