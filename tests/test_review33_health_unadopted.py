"""Review 33b: ``flask webhooks health`` must adopt an earlier version's data as it loads the app, as every
process does: a version of it that skipped the adoption (to spare a frozen Redis's socket timeout) made a
second receiver read the keys right under a prefix nobody owned, the first receiver's backlog and failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import redis

from webhook_receiver.stores.redis import RedisStore
from webhook_receiver.testing.store_contract import contract_event

from .conftest import REDIS_URL


def test_health_of_a_second_receiver_does_not_count_the_first_receiver_s_earlier_data(
    redis_prefix: str, tmp_path: Path
) -> None:
    # The version before: one receiver, shop; its keys right under the prefix, no owner key.
    before = RedisStore(REDIS_URL, prefix=redis_prefix, receiver="shop")
    assert before.finish(before.claim(contract_event("done-before")), ok=True)
    for i in range(3):
        assert before.accept(contract_event(f"queued-{i}")) is None
    before.finish(before.claim(contract_event("failed-before")), ok=False)
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(f"{redis_prefix}:owner")
    before.close()

    (tmp_path / "twoapp.py").write_text(
        textwrap.dedent(f"""
        from flask import Flask
        from webhook_receiver import WebhookReceiver

        def create_app():
            app = Flask(__name__)
            app.config.update(
                WEBHOOK_RECEIVER_SECRET_KEY="review33b-secret-0123456789",
                WEBHOOK_RECEIVER_STORE={REDIS_URL!r},
                WEBHOOK_RECEIVER_REDIS_PREFIX={redis_prefix!r},
                WEBHOOK_RECEIVERS={{"outlet": {{"URL": "/webhooks/outlet"}}}},
            )
            shop = WebhookReceiver(app, name="shop")
            outlet = WebhookReceiver(app, name="outlet")
            shop.on("order.paid")(lambda e: None)
            outlet.on("order.paid")(lambda e: None)
            return app
    """)
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), str(tmp_path)]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "twoapp:create_app",
            "webhooks",
            "health",
            "--receiver",
            "outlet",
            "--json",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(done.stdout)["receivers"]["outlet"]
    client.close()
    # outlet has never received anything: shop's 3 queued events and 1 failed one are not its own
    assert report["backlog"]["detail"] == "0 events due", report
    assert report["failed"]["detail"] == "0 events failed", report
