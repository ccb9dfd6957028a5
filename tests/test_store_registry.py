"""WEBHOOK_RECEIVER_STORE URLs: the built-in schemes, schemes added in code, and schemes added by a package."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from flask import Flask

from webhook_receiver import WebhookReceiver
from webhook_receiver.stores import EventStore, MemoryStore, StoreSettings, register_store, registry

SECRET = "a-long-enough-secret-1234"


def make_app(store: object, tmp_path: Path) -> Flask:
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=store, WEBHOOK_RECEIVER_LEASE_SECONDS=12
    )
    return app


@pytest.fixture
def scratch_scheme() -> object:
    yield
    registry._factories.pop("scratch", None)


def test_a_scheme_registered_in_code_builds_the_store(tmp_path: Path, scratch_scheme: object) -> None:
    seen: list[tuple[str, StoreSettings]] = []

    def factory(url: str, settings: StoreSettings) -> EventStore:
        seen.append((url, settings))
        return MemoryStore(lease_seconds=settings.lease_seconds)

    register_store("Scratch", factory)
    assert "scratch" in registry.schemes()
    receiver = WebhookReceiver(name="shop")
    app = make_app("scratch+driver://host/db", tmp_path)
    receiver.init_app(app)
    url, settings = seen[0]
    assert url == "scratch+driver://host/db", "a driver suffix falls back to the scheme's factory"
    assert (settings.receiver, settings.lease_seconds, settings.instance_path) == ("shop", 12, app.instance_path)
    assert settings.config["WEBHOOK_RECEIVER_SECRET_KEY"] == SECRET
    assert isinstance(receiver.get_store(app), MemoryStore)


@pytest.mark.parametrize(
    "value, message",
    [
        (
            "nope://x",
            "no store is registered for nope://... (known: mariadb://, memory://, mysql://, postgres://, postgresql://, redis://",
        ),
        ("events.sqlite3", "no store is registered for a value without a scheme"),
        ("memory://x", "the memory store takes no path or options"),
        ("sqlite:///", "a SQLite store needs a file"),
        ("sqlite://relative", "sqlite:///relative/path or sqlite:////absolute/path"),
    ],
)
def test_a_url_no_factory_can_use_is_refused_at_init_app(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(RuntimeError, match="WEBHOOK_RECEIVER_STORE") as raised:
        WebhookReceiver(make_app(value, tmp_path))
    assert message in str(raised.value)


@pytest.mark.parametrize("scheme", ["", "1abc", "a b"])
def test_a_scheme_must_be_a_scheme(scheme: str) -> None:
    with pytest.raises(ValueError, match="not a URL scheme"):
        register_store(scheme, lambda url, settings: MemoryStore())


def test_a_package_adds_a_scheme_through_its_entry_point(tmp_path: Path) -> None:
    """A distribution on the path with a webhook_receiver.stores entry point, found when its scheme is used."""
    site = tmp_path / "site"
    (site / "plugin_store-1.0.dist-info").mkdir(parents=True)
    (site / "plugin_store-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: plugin-store\nVersion: 1.0\n"
    )
    (site / "plugin_store-1.0.dist-info" / "entry_points.txt").write_text(
        "[webhook_receiver.stores]\nplugged = plugin_store:from_url\n"
    )
    (site / "plugin_store.py").write_text(
        textwrap.dedent("""
        from webhook_receiver.stores import MemoryStore

        def from_url(url, settings):
            store = MemoryStore(lease_seconds=settings.lease_seconds)
            store.opened_with = url
            return store
    """)
    )
    script = textwrap.dedent(f"""
        from flask import Flask
        from webhook_receiver import WebhookReceiver
        app = Flask("x")
        app.config.update(WEBHOOK_RECEIVER_SECRET_KEY={SECRET!r}, WEBHOOK_RECEIVER_STORE="plugged://somewhere")
        receiver = WebhookReceiver(app)
        print(type(receiver.get_store(app)).__name__, receiver.get_store(app).opened_with)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), *sys.path]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["MemoryStore", "plugged://somewhere"]
