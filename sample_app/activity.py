"""The sample app's visible record of what its handlers did: one JSON line per action."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from flask import current_app

_lock = threading.Lock()


def record(action: str, **details: Any) -> dict[str, Any]:
    """Append one action to the app's activity file and return it.

    :param action: what was done, such as ``"payment_recorded"``.
    :param details: what it was done to.
    """
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "action": action, **details}
    line = json.dumps(entry, sort_keys=True) + "\n"
    with _lock:
        # O_APPEND keeps whole lines from several processes apart.
        fd = os.open(current_app.config["SAMPLE_ACTIVITY_FILE"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)
    return entry


def read_activity(path: str) -> list[dict[str, Any]]:
    """Every action recorded in the activity file at *path*, oldest first."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
