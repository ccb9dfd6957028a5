"""Review of issue 17, item 11: a key whose *prefix* is misspelled is warned about too.

``WEBHOOK_RECIEVER_STORE`` (i before e), ``WEBHOOK_RECEVIER_DISPATCH``, a lower-case key set
directly in ``app.config``: before the fix only keys starting with ``WEBHOOK_RECEIVER`` were looked
at, so these left the SQLite store and inline dispatch in place without a word.
"""

from __future__ import annotations

import warnings

import pytest

from webhook_receiver import WebhookReceiver
from webhook_receiver.settings import UnknownSettingWarning

from .conftest import SECRET, new_app


@pytest.mark.parametrize(
    "key, nearest",
    [
        ("WEBHOOK_RECIEVER_STORE", "WEBHOOK_RECEIVER_STORE"),
        ("WEBHOOK_RECEVIER_DISPATCH", "WEBHOOK_RECEIVER_DISPATCH"),
        ("WEBHOOKS_RECEIVER_STORE", "WEBHOOK_RECEIVER_STORE"),
        ("WEBHOOKRECEIVER_DISPATCH", "WEBHOOK_RECEIVER_DISPATCH"),
        ("webhook_receiver_store", "WEBHOOK_RECEIVER_STORE"),
        ("WEBHOOK_RECIEVERS", "WEBHOOK_RECEIVERS"),
    ],
)
def test_a_misspelled_prefix_is_warned_about_naming_the_key_meant(key: str, nearest: str) -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    app.config[key] = {} if key.upper().endswith("S") else "memory://"
    expected = f"{key} is not a setting of webhook_receiver; did you mean {nearest}"
    with pytest.warns(UnknownSettingWarning, match=expected):
        WebhookReceiver().init_app(app)


@pytest.mark.parametrize("key", ["WEBHOOK_URL", "WEBHOOK_SECRET", "SQLALCHEMY_DATABASE_URI", "RECEIVER", "SECRET_KEY"])
def test_keys_of_the_app_s_own_are_left_alone(key: str) -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    app.config[key] = "something"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownSettingWarning)
        WebhookReceiver().init_app(app)
