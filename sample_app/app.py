"""The app factory of the sample shop back office."""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from flask import Flask

from .handlers import receiver


def create_app(test_config: Mapping[str, Any] | None = None, *, instance_path: str | None = None) -> Flask:
    """Create the sample app.

    The webhook secret comes, in order of precedence, from *test_config*,
    ``FLASK_``-prefixed environment variables, the instance folder's
    ``config.py`` and the ``WEBHOOK_RECEIVER_SECRET_KEY`` environment
    variable; with none of them the receiver refuses to start.
    ``SAMPLE_FLAKY_MAIL = True`` makes the pretend mail server fail the
    first attempt of each shipping notification, to watch a retry.

    :param test_config: config keys that win over every other source.
    :param instance_path: where the app keeps its files; Flask's default
        ``instance/`` folder beside the package when not given.
    """
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    app.config.from_mapping(
        WEBHOOK_RECEIVER_SECRET_KEY=os.environ.get("WEBHOOK_RECEIVER_SECRET_KEY") or None,
        SAMPLE_ACTIVITY_FILE=os.path.join(app.instance_path, "activity.jsonl"),
        SAMPLE_OUTBOX=os.path.join(app.instance_path, "outbox"),
        SAMPLE_FLAKY_MAIL=False,
    )
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env()  # FLASK_WEBHOOK_RECEIVER_SECRET_KEY=..., FLASK_SAMPLE_FLAKY_MAIL=true
    if test_config:
        app.config.update(test_config)
    os.makedirs(app.config["SAMPLE_OUTBOX"], exist_ok=True)
    logging.getLogger("sample_app").setLevel(logging.INFO)
    receiver.init_app(app)

    @app.get("/")
    def index() -> dict[str, Any]:
        return {
            "app": "webhook_receiver sample shop",
            "webhook_url": receiver.get_config(app).url,
            "handlers": [h.name for h in receiver.handlers],
        }

    return app
