"""The catalogue of settings: an unknown (misspelled) key is a warning naming the nearest known one."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from webhook_receiver import WebhookReceiver
from webhook_receiver.settings import KEYS, PREFIX, RECEIVERS, UnknownSettingWarning

from .conftest import SECRET, new_app

ROOT = Path(__file__).resolve().parent.parent

#: Names with the prefix that are environment variables the package reads, never app.config keys.
ENVIRONMENT_ONLY = {
    "WEBHOOK_RECEIVER_TUNNEL_SECRET",
    "WEBHOOK_RECEIVER_STOMP_USERNAME",
    "WEBHOOK_RECEIVER_STOMP_PASSWORD",
}


def init(name: str = "moltin", **config: Any) -> list[str]:
    """Set up a receiver on an app with *config*; the UnknownSettingWarning messages it gave."""
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, **config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        WebhookReceiver(app, name=name)
    return [str(w.message) for w in caught if issubclass(w.category, UnknownSettingWarning)]


@pytest.mark.parametrize(
    ("key", "nearest"),
    [
        ("WEBHOOK_RECEIVER_STORE_URL", "WEBHOOK_RECEIVER_STORE"),
        ("WEBHOOK_RECEIVER_DISPATCHER", "WEBHOOK_RECEIVER_DISPATCH"),
        ("WEBHOOK_RECEIVER_SECRET", "WEBHOOK_RECEIVER_SECRET_KEY"),
        ("WEBHOOK_RECEIVER_THREAD", "WEBHOOK_RECEIVER_THREADS"),
        ("WEBHOOK_RECEIVER_LEASE", "WEBHOOK_RECEIVER_LEASE_SECONDS"),
        ("WEBHOOK_RECEIVERS_URL", "WEBHOOK_RECEIVER_URL"),
        ("WEBHOOK_RECEIVER", "WEBHOOK_RECEIVERS"),
    ],
)
def test_an_unknown_app_wide_key_warns_naming_the_nearest_known_one(key: str, nearest: str) -> None:
    secret_like = "whsec-do-not-print-me-0123456789"
    messages = init(**{key: secret_like})
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"{key} is not a setting of webhook_receiver; did you mean {nearest}?")
    assert secret_like not in messages[0], "the value is never shown"


def test_an_unknown_key_far_from_every_known_one_warns_without_a_guess() -> None:
    (message,) = init(WEBHOOK_RECEIVER_ZZZZZZZZZZZZ=1)
    assert message == "WEBHOOK_RECEIVER_ZZZZZZZZZZZZ is not a setting of webhook_receiver. It is ignored."


def test_known_keys_and_other_apps_keys_do_not_warn() -> None:
    assert (
        init(
            WEBHOOK_RECEIVER_ALLOW_NO_SECRET=False,
            WEBHOOK_RECEIVER_URL="/hooks",
            WEBHOOK_RECEIVER_STORE="memory://",
            WEBHOOK_RECEIVER_DISPATCH="inline",
            WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH=1000,
            WEBHOOK_RECEIVER_REDIS_PREFIX="p",
            WEBHOOK_RECEIVER_TABLE_PREFIX="t_",
            WEBHOOK_RECEIVER_LEASE_SECONDS=30,
            WEBHOOK_RECEIVER_THREADS=2,
            WEBHOOK_RECEIVER_MAX_ATTEMPTS=3,
            WEBHOOK_RECEIVER_RETRY_BACKOFF=1.5,
            WEBHOOK_RECEIVER_MAX_BACKLOG=10,
            WEBHOOK_RECEIVER_GRACE_SECONDS=5,
            WEBHOOK_RECEIVERS={"moltin": {"URL": "/mine"}},
            WEBHOOK_SOMETHING_ELSE=1,
            EPCC_CLIENT_ID="x",
        )
        == []
    )


@pytest.mark.parametrize(
    ("entry_key", "nearest"),
    [("URLS", "'URL'"), ("WEBHOOK_RECEIVER_URL", "'URL'"), ("dispatch", "'DISPATCH'"), ("SECRET", "'SECRET_KEY'")],
)
def test_an_unknown_key_of_the_receiver_s_entry_warns(entry_key: str, nearest: str) -> None:
    messages = init("outlet", WEBHOOK_RECEIVERS={"outlet": {entry_key: "/x"}})
    assert messages == [
        f"WEBHOOK_RECEIVERS['outlet'][{entry_key!r}] is not a setting of webhook_receiver;"
        f" did you mean {nearest}? It is ignored."
    ]


def test_an_entry_named_close_to_the_receiver_warns() -> None:
    messages = init("outlet", WEBHOOK_RECEIVERS={"outlt": {"URL": "/hooks/outlet"}})
    assert messages == [
        "WEBHOOK_RECEIVERS has an entry 'outlt' and none for the receiver 'outlet' being set up;"
        " did you mean 'outlet'? It is ignored."
    ]
    assert init("shop", WEBHOOK_RECEIVERS={"outlet": {"URL": "/hooks/outlet"}}) == [], "another receiver's entry"
    assert init("shop", WEBHOOK_RECEIVERS={"shop-eu": {"URL": "/hooks/eu"}}) == [], "a receiver named alike"


def test_two_receivers_are_told_of_an_app_wide_key_once() -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE_URL="memory://")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        WebhookReceiver(app, name="shop")
        WebhookReceiver(app, name="outlet")
    assert [issubclass(w.category, UnknownSettingWarning) for w in caught] == [True]
    assert caught[0].filename == __file__, "the warning points at the caller's init_app"


def test_the_warning_is_a_user_warning_that_can_be_filtered_or_made_an_error() -> None:
    assert issubclass(UnknownSettingWarning, UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownSettingWarning)
        with pytest.raises(UnknownSettingWarning, match="WEBHOOK_RECEIVER_DISPATCH"):
            WebhookReceiver(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_DISPATCHER="thread"))


def package_keys() -> set[str]:
    """Every WEBHOOK_RECEIVER_* name in a string of the package's source."""
    found: set[str] = set()
    for path in (ROOT / "webhook_receiver").rglob("*.py"):
        found.update(re.findall(r"\bWEBHOOK_RECEIVER_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    return found


def test_every_key_the_package_reads_is_in_the_catalogue() -> None:
    """A key read anywhere in the package (stores, cli, upstream...) and missing here would be warned about
    as misspelled: the catalogue is the one list."""
    known = {PREFIX + name for name in KEYS}
    assert package_keys() - ENVIRONMENT_ONLY - known == set()
    assert known <= package_keys(), "a key nothing reads is not a setting"


def test_every_key_of_the_catalogue_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.rst").read_text()
    described = set(re.findall(r"\b[A-Z][A-Z_]+\b", " ".join(re.findall(r"^\.\. describe:: (.+)$", text, re.M))))
    missing = [PREFIX + name for name in KEYS if PREFIX + name not in described]
    assert missing == []
    assert RECEIVERS in described
