"""The docs pages the tools own: the configuration page is one entry per key, not a table that runs off the page."""

from __future__ import annotations

import re
from pathlib import Path

from webhook_receiver.settings import KEYS, PREFIX

ROOT = Path(__file__).resolve().parent.parent


def test_the_configuration_page_has_one_entry_per_key_and_every_key_read() -> None:
    page = (ROOT / "docs" / "configuration.rst").read_text()
    assert "list-table" not in page and "\n   * - " not in page, "a wide table runs off the page at 1280 px"
    described = " ".join(re.findall(r"^\.\. describe:: (.+)$", page, flags=re.MULTILINE))
    # every known key has its entry (tests/test_config_keys.py checks the catalogue against the source)
    read = {PREFIX + name for name in KEYS}
    assert sorted(key for key in read if key not in described) == []
    for key in ("EPCC_CLIENT_ID", "EPCC_API_BASE_URL", "SECRET_KEY_FALLBACKS", "WEBHOOK_RECEIVER_TABLE_PREFIX"):
        assert key in described, key
    for entry in re.split(r"^\.\. describe:: ", page, flags=re.MULTILINE)[1:]:
        assert "Default: " in entry, entry[:60]
        assert max(len(line) for line in entry.splitlines()) <= 110, entry[:60]
