"""Sync and the flask webhooks commands, against the running emulator."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.cli import webhooks_cli
from webhook_receiver.local.emulator import Emulator
from webhook_receiver.upstream.client import MoltinClient
from webhook_receiver.upstream.sync import SyncError, default_integration_name, sync_integration

from .conftest import SECRET, add_integrations, new_app
from .processes import free_port

URL = "https://shop.example/webhooks/moltin"


@pytest.fixture
def routed(receiver: WebhookReceiver) -> WebhookReceiver:
    receiver.on("order.paid", "order.fulfilled")(lambda e: None)
    receiver.on("product.deleted", name="unindex")(lambda e: None)
    return receiver


class CountingSession:
    """Counts the write calls a client makes (it wraps a real requests.Session)."""

    def __init__(self) -> None:
        import requests

        self.session = requests.Session()
        self.writes: list[str] = []
        self.locks: set[str] = set()

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.session.request(method, url, **kwargs)
        if method in ("POST", "PUT", "DELETE") and "/v2/" in url:
            name = ((kwargs.get("json") or {}).get("data") or {}).get("name")
            if str(name).endswith(".sync-lock"):  # the lock a writing sync holds, not a change
                self.locks.add(response.json()["data"]["id"])
            elif not any(url.endswith(f"/{lock}") for lock in self.locks):
                self.writes.append(f"{method} {url}")
        return response


def test_observes_expands_wildcards(receiver: WebhookReceiver) -> None:
    receiver.on("order.*")(lambda e: None)
    receiver.on("product.deleted", name="b")(lambda e: None)
    receiver.signal("cart.updated").connect(lambda sender, event: None, weak=False)
    receiver.signal("brand.created")  # no receiver: not observed
    observes = receiver.observes()
    assert observes == sorted(observes)
    assert {"order.paid", "order.fulfilled", "order.cancelled", "product.deleted", "cart.updated"} <= set(observes)
    assert "brand.created" not in observes and not any(o.startswith("customer.") for o in observes)


def test_create_then_unchanged_then_update(moltin: Emulator, routed: WebhookReceiver) -> None:
    session = CountingSession()
    client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url, session=session)  # type: ignore[arg-type]
    first = sync_integration(client, routed, URL, secret_key=SECRET)
    assert first.action == "created"
    assert first.integration is not None
    assert first.integration["name"] == default_integration_name(routed)
    assert first.integration["observes"] == ["order.fulfilled", "order.paid", "product.deleted"]
    assert first.integration["configuration"]["secret_key"] == "[redacted]"
    stored = next(iter(moltin.state.integrations.values()))
    assert stored["configuration"] == {"url": URL, "secret_key": SECRET}
    assert len(session.writes) == 1

    second = sync_integration(client, routed, URL, secret_key=SECRET)
    assert (second.action, second.changes) == ("unchanged", {})
    assert len(session.writes) == 1, "a second run makes no write call"

    routed.on("customer.created", name="welcome")(lambda e: None)
    third = sync_integration(client, routed, URL + "/v2", secret_key="rotated-secret")
    assert third.action == "updated"
    assert set(third.changes) == {"observes", "url", "secret_key", "description"}
    assert third.changes["secret_key"] == ("[redacted]", "[redacted]")
    assert stored["configuration"] == {"url": URL + "/v2", "secret_key": "rotated-secret"}
    assert len(moltin.state.integrations) == 1, "never a duplicate"
    assert "rotated-secret" not in str(third) + repr(third)


def test_dry_run_writes_nothing(moltin_client: MoltinClient, moltin: Emulator, routed: WebhookReceiver) -> None:
    result = sync_integration(moltin_client, routed, URL, secret_key=SECRET, dry_run=True)
    assert result.action == "created" and result.dry_run
    assert "would create" in str(result)
    assert moltin.state.integrations == {}


def test_sync_finds_its_integration_past_a_short_first_page(routed: WebhookReceiver) -> None:
    """A store serving 25 a page: the receiver's integration is on the second page and is updated, not
    created again."""
    with Emulator(page_size=25) as moltin:
        client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url, backoff=0.01)
        add_integrations(moltin, 30, "other", url="https://other.example/")
        assert sync_integration(client, routed, URL, secret_key=SECRET).action == "created"
        routed.on("customer.created", name="welcome")(lambda e: None)
        assert sync_integration(client, routed, URL, secret_key=SECRET).action == "updated"
        assert sum(1 for i in moltin.state.integrations.values() if i["configuration"]["url"] == URL) == 1, (
            "never a duplicate"
        )


def test_found_by_url_when_renamed(moltin_client: MoltinClient, routed: WebhookReceiver) -> None:
    old = moltin_client.create_integration(name="hand made", url=URL, observes=["order.paid"], secret_key=SECRET)
    result = sync_integration(moltin_client, routed, URL, secret_key=SECRET)
    assert result.action == "updated" and result.changes["name"] == ("hand made", default_integration_name(routed))
    assert [i["id"] for i in moltin_client.list_integrations()] == [old["id"]]


def test_refuses_ambiguity_quota_and_nothing_to_observe(
    moltin_client: MoltinClient, routed: WebhookReceiver, receiver: WebhookReceiver, moltin: Emulator
) -> None:
    with pytest.raises(SyncError, match="nothing to observe"):
        sync_integration(moltin_client, WebhookReceiver(name="empty"), URL, secret_key=SECRET)
    moltin_client.create_integration(name="twin", url=URL, observes=["order.paid"])
    moltin_client.create_integration(name="twin", url=URL + "/2", observes=["order.paid"])
    with pytest.raises(SyncError, match="2 webhook integrations are named 'twin'"):
        sync_integration(moltin_client, routed, URL, name="twin", secret_key=SECRET)
    for n in range(98):
        moltin.state.new_integration(
            {
                "name": f"filler-{n}",
                "integration_type": "webhook",
                "observes": ["order.paid"],
                "configuration": {"url": "http://x"},
            },
            moltin.url,
        )
    session = CountingSession()
    client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url, session=session)  # type: ignore[arg-type]
    with pytest.raises(SyncError, match="past upstream's quota of 100"):
        sync_integration(client, routed, "https://elsewhere.example/hooks", name="new", secret_key=SECRET)
    assert session.writes == [], "refused before any write"


def many(receiver: WebhookReceiver, *patterns: str) -> WebhookReceiver:
    for n, pattern in enumerate(patterns):
        receiver.on(pattern, name=f"h{n}")(lambda e: None)
    return receiver


def test_five_events_per_integration_spread_over_a_group(moltin: Emulator) -> None:
    session = CountingSession()
    client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url, session=session)  # type: ignore[arg-type]
    shop = many(WebhookReceiver(secret_key=SECRET), "order.*", "customer.*", "product.deleted", "cart.updated")
    assert len(shop.observes()) == 12
    first = sync_integration(client, shop, URL, name="shop", secret_key=SECRET)
    assert first.action == "created" and [s.name for s in first.steps] == ["shop", "shop-2", "shop-3"]
    groups = {i["name"]: i["observes"] for i in moltin.state.integrations.values()}
    assert [len(groups[n]) for n in ("shop", "shop-2", "shop-3")] == [5, 5, 2]
    assert sorted(e for events in groups.values() for e in events) == shop.observes(), "each event once"
    assert len(session.writes) == 3

    again = sync_integration(client, shop, URL, name="shop", secret_key=SECRET)
    assert again.action == "unchanged" and len(session.writes) == 3, "a second run makes no write call"

    grown = many(
        WebhookReceiver(secret_key=SECRET),
        "order.*",
        "customer.*",
        "product.deleted",
        "cart.updated",
        "account.created",
        "file.created",
    )
    plan = sync_integration(client, grown, URL, name="shop", secret_key=SECRET, dry_run=True)
    assert "would update integration 'shop-3'" in str(plan) and "would leave integration 'shop'" in str(plan)
    assert len(session.writes) == 3, "a dry run writes nothing"
    sync_integration(client, grown, URL, name="shop", secret_key=SECRET)
    after = {i["name"]: i["observes"] for i in moltin.state.integrations.values()}
    assert after["shop"] == groups["shop"] and after["shop-2"] == groups["shop-2"], "events stay where they are"
    assert sorted(after["shop-3"]) == sorted(groups["shop-3"] + ["account.created", "file.created"])

    shrunk = many(WebhookReceiver(secret_key=SECRET), "customer.*", "product.deleted", "cart.updated")
    result = sync_integration(client, shrunk, URL, name="shop", secret_key=SECRET)
    actions = {s.name: s.action for s in result.steps}
    kept = {i["name"]: sorted(i["observes"]) for i in moltin.state.integrations.values()}
    assert sorted(e for events in kept.values() for e in events) == shrunk.observes()
    assert "deleted" in actions.values() and len(kept) < 3, "its own integrations left empty are deleted"
    before = len(session.writes)
    assert sync_integration(client, shrunk, URL, name="shop", secret_key=SECRET).action == "unchanged"
    assert len(session.writes) == before


def test_a_group_takes_only_its_own_numbered_integrations(moltin_client: MoltinClient, moltin: Emulator) -> None:
    moltin_client.create_integration(name="shop-2", url="https://someone.example/else", observes=["order.paid"])
    shop = many(WebhookReceiver(secret_key=SECRET), "order.*")
    result = sync_integration(moltin_client, shop, URL, name="shop", secret_key=SECRET)
    names = sorted(i["name"] for i in moltin.state.integrations.values())
    # A new member skips the name a person's integration has.
    assert names == ["shop", "shop-2", "shop-3"] and [s.name for s in result.steps] == ["shop", "shop-3"]
    hand_made = [
        i for i in moltin.state.integrations.values() if i["configuration"]["url"] == "https://someone.example/else"
    ]
    assert hand_made[0]["observes"] == ["order.paid"], "a person's integration is left alone"
    again = sync_integration(moltin_client, shop, URL, name="shop", secret_key=SECRET)
    assert again.action == "unchanged" and [s.name for s in again.steps] == ["shop", "shop-3"]


def test_sync_refuses_unknown_names_before_any_write(moltin: Emulator, receiver: WebhookReceiver) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        receiver.on("order.paid", "order.payed", "wishlist.created")(lambda e: None)
    receiver.on("wishlist_ext.created", name="custom")(lambda e: None)
    session = CountingSession()
    client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url, session=session)  # type: ignore[arg-type]
    with pytest.raises(SyncError) as info:
        sync_integration(client, receiver, URL, secret_key=SECRET)
    assert "order.payed (did you mean order.paid?)" in str(info.value)
    assert "wishlist.created" in str(info.value) and "wishlist_ext" not in str(info.value).split(";")[0]
    assert session.writes == [] and moltin.state.integrations == {}


@pytest.fixture
def cli_app(make_app: Callable[..., Flask], routed: WebhookReceiver, moltin: Emulator) -> Flask:
    return make_app(
        MOLTIN_CLIENT_ID=moltin.client_id, MOLTIN_CLIENT_SECRET=moltin.client_secret, MOLTIN_API_URL=moltin.url
    )


def test_cli_sync_list_logs_delete(cli_app: Flask, moltin: Emulator) -> None:
    runner = cli_app.test_cli_runner()
    dry = runner.invoke(webhooks_cli, ["sync", "--url", URL, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would create" in dry.output and moltin.state.integrations == {}
    created = runner.invoke(webhooks_cli, ["sync", "--url", URL])
    assert created.exit_code == 0 and created.output.startswith("created integration")
    again = runner.invoke(webhooks_cli, ["sync", "--url", URL])
    assert again.output.startswith("unchanged"), again.output
    listed = runner.invoke(webhooks_cli, ["list"])
    assert "webhook_receiver-moltin" in listed.output and "order.fulfilled, order.paid" in listed.output
    assert SECRET not in created.output + listed.output
    listed_json = runner.invoke(webhooks_cli, ["list", "--json"]).output
    assert json.loads(listed_json)[0]["configuration"]["secret_key"] == "[redacted]" and SECRET not in listed_json
    assert runner.invoke(webhooks_cli, ["logs"]).output.strip() == "no logs"
    deleted = runner.invoke(webhooks_cli, ["delete", "--name", "webhook_receiver-moltin"])
    assert deleted.exit_code == 0 and moltin.state.integrations == {}
    assert runner.invoke(webhooks_cli, ["delete"]).exit_code == 2
    missing = runner.invoke(webhooks_cli, ["delete", "--name", "nope"])
    assert missing.exit_code == 1 and "no integration is named 'nope'" in missing.output


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give the endpoint's public URL, such as --url https://shop.example.com/webhooks/moltin"),
        (["--url", "https://shop.example/hooks"], "mounted at /webhooks/moltin, but --url ends in '/hooks'"),
        (["--url", "https://shop.example"], "Give https://shop.example/webhooks/moltin, or add --force"),
        (["--url", "shop.example/webhooks/moltin"], "--url must be an http(s) URL with a host"),
    ],
)
def test_cli_sync_refuses_a_url_upstream_could_not_deliver_to(
    cli_app: Flask, moltin: Emulator, args: list[str], message: str
) -> None:
    refused = cli_app.test_cli_runner().invoke(webhooks_cli, ["sync", *args])
    assert refused.exit_code == 2 and message in refused.output, refused.output
    assert moltin.state.integrations == {}, "nothing is written"


def test_cli_sync_force_takes_a_path_a_proxy_rewrites(cli_app: Flask, moltin: Emulator) -> None:
    forced = cli_app.test_cli_runner().invoke(webhooks_cli, ["sync", "--url", "https://shop.example/hooks", "--force"])
    assert forced.exit_code == 0 and forced.output.startswith("created integration"), forced.output


def test_cli_list_and_delete_understand_the_group(make_app: Callable[..., Flask], moltin: Emulator) -> None:
    receiver = many(WebhookReceiver(secret_key=SECRET), "order.*")
    app = new_app(
        MOLTIN_CLIENT_ID=moltin.client_id, MOLTIN_CLIENT_SECRET=moltin.client_secret, MOLTIN_API_URL=moltin.url
    )
    receiver.init_app(app)
    runner = app.test_cli_runner()
    synced = runner.invoke(webhooks_cli, ["sync", "--url", URL])
    assert "created integration 'webhook_receiver-moltin'" in synced.output
    assert "created integration 'webhook_receiver-moltin-2'" in synced.output
    listed = runner.invoke(webhooks_cli, ["list"]).output
    assert listed.count("[sync group 'webhook_receiver-moltin']") == 2
    deleted = runner.invoke(webhooks_cli, ["delete", "--name", "webhook_receiver-moltin"])
    assert deleted.exit_code == 0 and deleted.output.count("deleted integration") == 2
    assert moltin.state.integrations == {}


def test_cli_routes_and_secret(cli_app: Flask) -> None:
    runner = cli_app.test_cli_runner()
    routes = runner.invoke(webhooks_cli, ["routes"])
    assert routes.exit_code == 0
    lines = routes.output.splitlines()
    assert lines[0].startswith("order.fulfilled") and "<lambda>" in lines[0]
    assert lines[2].startswith("product.deleted") and lines[2].endswith("unindex")
    secret = runner.invoke(webhooks_cli, ["secret"])
    assert secret.exit_code == 0 and secret.stdout.strip() == SECRET
    assert "warning" in secret.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"MOLTIN_CLIENT_ID": None, "MOLTIN_CLIENT_SECRET": None}, "set EPCC_CLIENT_ID and EPCC_CLIENT_SECRET"),
        ({"MOLTIN_CLIENT_SECRET": "wrong"}, "authentication failed (401)"),
        ({"MOLTIN_API_URL": "http://127.0.0.1:9"}, "cannot connect"),
        ({"MOLTIN_API_URL": "useast.api.elasticpath.com"}, "EPCC_API_BASE_URL: the API host must be a URL such as"),
        ({"EPCC_API_BASE_URL": "ftp://x"}, "EPCC_API_BASE_URL: the API host must be a URL"),
        ({"EPCC_API_BASE_URL": "http://192.0.2.2:8080"}, "EPCC_API_BASE_URL: the API host URL is plain http"),
        ({"EPCC_API_BASE_URL": "https://u:BasePass@api.example"}, "EPCC_API_BASE_URL: the API host URL carries a"),
        ({"EPCC_API_BASE_URL": "https://api.example:BasePass"}, "EPCC_API_BASE_URL: the API host must be a URL"),
    ],
)
def test_cli_failures_are_one_line(
    make_app: Callable[..., Flask],
    routed: WebhookReceiver,
    moltin: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    config: dict[str, Any],
    message: str,
) -> None:
    for name in (
        "MOLTIN_CLIENT_ID",
        "MOLTIN_CLIENT_SECRET",
        "MOLTIN_API_URL",
        "EPCC_CLIENT_ID",
        "EPCC_CLIENT_SECRET",
        "EPCC_API_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = {
        "MOLTIN_CLIENT_ID": moltin.client_id,
        "MOLTIN_CLIENT_SECRET": moltin.client_secret,
        "MOLTIN_API_URL": moltin.url,
        **config,
    }
    app = make_app(**settings)
    result = app.test_cli_runner().invoke(webhooks_cli, ["sync", "--url", URL])
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert "BasePass" not in result.output


def test_credentials_from_the_environment(
    make_app: Callable[..., Flask], routed: WebhookReceiver, moltin: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOLTIN_CLIENT_ID", moltin.client_id)
    monkeypatch.setenv("MOLTIN_CLIENT_SECRET", moltin.client_secret)
    monkeypatch.setenv("MOLTIN_API_URL", moltin.url)
    result = make_app().test_cli_runner().invoke(webhooks_cli, ["list"])
    assert result.exit_code == 0 and result.output.strip() == "no integrations"


def test_epcc_names_win_and_the_config_before_the_environment(
    make_app: Callable[..., Flask], routed: WebhookReceiver, moltin: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EPCC_CLIENT_ID", moltin.client_id)
    monkeypatch.setenv("EPCC_CLIENT_SECRET", "wrong-in-the-environment")
    monkeypatch.setenv("EPCC_API_BASE_URL", moltin.url)
    monkeypatch.setenv("MOLTIN_CLIENT_ID", "ignored: the EPCC_ name wins")
    app = make_app(MOLTIN_CLIENT_SECRET=moltin.client_secret)  # the config wins over the environment
    result = app.test_cli_runner().invoke(webhooks_cli, ["list"])
    assert result.exit_code == 0 and result.output.strip() == "no integrations", result.output


def test_default_host_and_the_deprecated_one(caplog: pytest.LogCaptureFixture) -> None:
    from webhook_receiver.upstream.client import DEFAULT_BASE_URL

    assert DEFAULT_BASE_URL == "https://euwest.api.elasticpath.com"
    assert MoltinClient("id", "secret").base_url == DEFAULT_BASE_URL
    with caplog.at_level("WARNING", logger="webhook_receiver"):
        MoltinClient("id", "secret", base_url="https://api.moltin.com/")
    assert "api.moltin.com is deprecated" in caplog.text and DEFAULT_BASE_URL in caplog.text
    with pytest.raises(ValueError, match="must be a URL such as"):
        MoltinClient("id", "secret", base_url="euwest.api.elasticpath.com")


def test_plain_http_is_taken_for_this_machine_and_elsewhere_only_when_allowed() -> None:
    from webhook_receiver.upstream.client import allows_http, check_base_url

    for here in (
        "http://127.0.0.1:9",
        "http://127.1.2.3",
        "http://localhost:9",
        "http://localhost.:9",
        "http://[::1]:9",
    ):
        assert check_base_url(here) == here
    assert check_base_url("http://0.0.0.0:8765") == "http://0.0.0.0:8765", "what emulate --host 0.0.0.0 prints"
    assert check_base_url("http://[::ffff:127.0.0.1]:9") == "http://[::ffff:127.0.0.1]:9"
    for elsewhere in ("http://emulator:8765", "http://192.0.2.2:9", "http://evil.localhost:9"):
        with pytest.raises(ValueError, match="plain http to another machine"):
            check_base_url(elsewhere)
        assert check_base_url(elsewhere, allow_http=True) == elsewhere  # an emulator in another container
    assert MoltinClient("id", "secret", base_url="http://emulator:8765", allow_http=True).base_url.endswith(":8765")
    assert [allows_http(v) for v in ("1", "true", "YES", "0", "", "off", None)] == [True] * 3 + [False] * 4
    with pytest.raises(ValueError, match="EPCC_API_ALLOW_HTTP must be True or False"):
        allows_http("maybe")


def test_the_cli_takes_plain_http_elsewhere_when_told_to(
    make_app: Callable[..., Flask], routed: WebhookReceiver, moltin: Emulator
) -> None:
    here = moltin.url.replace("127.0.0.1", "emulator.invalid")  # plain http to "another machine"
    app = make_app(MOLTIN_CLIENT_ID=moltin.client_id, MOLTIN_CLIENT_SECRET=moltin.client_secret, MOLTIN_API_URL=here)
    refused = app.test_cli_runner().invoke(webhooks_cli, ["list"])
    assert refused.exit_code == 1 and "set EPCC_API_ALLOW_HTTP=1" in refused.output
    app.config["EPCC_API_ALLOW_HTTP"] = "maybe"
    assert "EPCC_API_ALLOW_HTTP must be True or False" in app.test_cli_runner().invoke(webhooks_cli, ["list"]).output
    app.config["EPCC_API_ALLOW_HTTP"] = "1"
    tried = app.test_cli_runner().invoke(webhooks_cli, ["list"])
    assert tried.exit_code == 1 and "emulator.invalid" in tried.output and "plain http" not in tried.output


def test_cli_with_two_receivers_needs_a_name(moltin: Emulator) -> None:
    app = new_app()
    for name in ("shop", "outlet"):
        receiver = WebhookReceiver(name=name, secret_key=f"{name}-secret")
        receiver.on("order.paid")(lambda e: None)
        receiver.init_app(app)
    runner = app.test_cli_runner()
    assert runner.invoke(webhooks_cli, ["secret", "--receiver", "outlet"]).stdout.strip() == "outlet-secret"
    missing = runner.invoke(webhooks_cli, ["secret"])
    assert missing.exit_code == 1 and "receivers: outlet, shop" in missing.output


def test_console_emulate_help() -> None:
    from click.testing import CliRunner

    from webhook_receiver.local.console import main

    result = CliRunner().invoke(main, ["emulate", "--help"])
    assert result.exit_code == 0
    assert "default: 8765" in result.output and "default: a fresh one" in result.output


def test_observes_ignores_nothing_handled(receiver: WebhookReceiver) -> None:
    assert receiver.observes() == []
    seen: list[Event] = []
    receiver.on("integration.*")(lambda e: seen.append(e))
    assert receiver.observes() == ["integration.created", "integration.deleted", "integration.updated"]


def test_every_command_and_option_says_what_it_does_in_plain_text() -> None:
    """``--help`` of every command of both groups: each option has help text, none shows raw reST."""
    import re

    import click

    from webhook_receiver.local.console import main

    for group in (webhooks_cli, main):
        assert group.help
        for name, command in group.commands.items():
            assert command.help, name
            for param in command.params:
                if isinstance(param, click.Option) and not param.hidden:
                    assert param.help, f"{group.name} {name} {param.opts}"
            text = command.get_help(click.Context(command, info_name=name))
            assert not re.search(r"``|:(func|class|meth|data|attr|mod):`", text), f"reST in {name} --help"
    listed = " ".join(sorted(webhooks_cli.commands))
    assert all(word in (webhooks_cli.help or "") for word in listed.split()), "the group's help names every command"


def test_a_webhook_url_s_login_shows_masked_in_sync_list_and_logs(
    make_app: Callable[..., Flask], routed: WebhookReceiver, moltin: Emulator
) -> None:
    """The basic-auth password of the URL upstream delivers to: masked in every command's output."""
    app = make_app(
        MOLTIN_CLIENT_ID=moltin.client_id, MOLTIN_CLIENT_SECRET=moltin.client_secret, MOLTIN_API_URL=moltin.url
    )
    runner = app.test_cli_runner()
    url = f"http://user:UrlPass1@127.0.0.1:{free_port()}/webhooks/moltin"  # nothing listens: deliveries fail
    outputs = []
    for args in (
        ["sync", "--url", url],
        ["sync", "--url", url.replace("UrlPass1", "UrlPass2"), "--dry-run"],
        ["sync", "--url", url.replace("/webhooks/moltin", "/elsewhere")],
        ["list"],
        ["list", "--json"],
    ):
        result = runner.invoke(webhooks_cli, args)
        outputs.append(result.output)
        assert "user:***@127.0.0.1" in result.output, (args, result.output)
    moltin.fire("order.paid")
    assert moltin.wait_idle(30)
    assert any("UrlPass1" in str(log.get("error_detail")) for log in moltin.logs()), "upstream's own log quotes it"
    for args in (["logs"], ["logs", "--json"]):
        result = runner.invoke(webhooks_cli, args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    for output in outputs:
        assert "UrlPass1" not in output and "UrlPass2" not in output, output
