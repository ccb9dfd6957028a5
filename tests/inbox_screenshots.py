"""The inbox's screenshots in the docs, made again: ``python -m tests.inbox_screenshots``.

Serves the demo app of :mod:`tests.inbox_app` (60 events over the last day,
some failed) on 127.0.0.1, and photographs the list and a failed event's
page with Debian's Chromium at 375 and 1920 px wide, into ``docs/_static/``.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from werkzeug.serving import make_server

from .browser import chromium_path
from .inbox_app import USER_HEADER, make_inbox_app, seed

OUT = Path(__file__).resolve().parent.parent / "docs" / "_static"
#: Width, height of each screenshot's window.
SIZES = {375: 812, 1920: 1080}


def main() -> int:
    executable = chromium_path()
    if executable is None:
        print("Chromium is not installed: python -m tests.browser installs it", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    app, clock = make_inbox_app(tempfile.mkdtemp(prefix="inbox-screenshots-"))
    seed(app, clock, count=60)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            for width, height in SIZES.items():
                context = browser.new_context(
                    base_url=base, viewport={"width": width, "height": height}, extra_http_headers={USER_HEADER: "ops"}
                )
                page = context.new_page()
                page.goto("/webhooks/inbox/")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(OUT / f"inbox-list-{width}.png"))
                page.goto("/webhooks/inbox/event?id=evt-always-failing")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(OUT / f"inbox-event-{width}.png"))
                context.close()
                print(f"wrote {OUT}/inbox-list-{width}.png and inbox-event-{width}.png")
            browser.close()
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
