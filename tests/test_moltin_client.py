"""The API client, against the running emulator and against misbehaving servers."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Iterator

import pytest

from webhook_receiver.local.emulator import Emulator
from webhook_receiver.upstream.client import MoltinAPIError, MoltinClient, MoltinConnectionError

from .conftest import add_integrations


def make(client: MoltinClient, n: int = 0, **fields: object) -> dict:
    return client.create_integration(
        name=f"hook-{n}", url=f"http://127.0.0.1:9/{n}", observes=["order.paid"], secret_key="s", **fields
    )  # type: ignore[arg-type]


def test_crud(moltin_client: MoltinClient) -> None:
    created = make(moltin_client, description="first")
    assert created["type"] == "integration" and created["enabled"] is True
    assert created["configuration"]["url"] == "http://127.0.0.1:9/0"
    assert moltin_client.get_integration(created["id"])["name"] == "hook-0"
    updated = moltin_client.update_integration(created["id"], observes=["order.paid", "order.fulfilled"], enabled=False)
    assert updated["observes"] == ["order.paid", "order.fulfilled"] and updated["enabled"] is False
    assert [i["id"] for i in moltin_client.list_integrations()] == [created["id"]]
    moltin_client.delete_integration(created["id"])
    assert moltin_client.list_integrations() == []
    with pytest.raises(MoltinAPIError) as info:
        moltin_client.get_integration(created["id"])
    assert info.value.status == 404
    assert info.value.errors[0]["title"] == "Not Found"
    assert "404" in str(info.value)


def test_list_follows_every_page(moltin_client: MoltinClient, moltin: Emulator) -> None:
    add_integrations(moltin, 23, "bulk")
    import webhook_receiver.upstream.client as module

    original = module._PAGE_LIMIT
    module._PAGE_LIMIT = 5
    try:
        names = [i["name"] for i in moltin_client.list_integrations()]
    finally:
        module._PAGE_LIMIT = original
    assert names == [f"bulk-{n}" for n in range(23)]


@pytest.mark.parametrize("page_size", [7, 25])
def test_a_store_serving_fewer_per_page_than_asked_is_read_to_the_end(page_size: int) -> None:
    """The client asks for 100 a page; the store serves fewer: a short page is not the last one."""
    with Emulator(page_size=page_size) as moltin:
        client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url, backoff=0.01)
        add_integrations(moltin, 60, "bulk")
        assert [i["name"] for i in client.list_integrations()] == [f"bulk-{n}" for n in range(60)]


def test_without_a_total_the_client_follows_links_next(moltin_client: MoltinClient, moltin: Emulator) -> None:
    import webhook_receiver.local.emulator.api as api

    add_integrations(moltin, 30, "n")
    original = api._json

    def no_total(body: Any, status: int = 200, headers: Any = None) -> Any:
        if isinstance(body, dict) and "meta" in body:
            body = dict(body, meta={"page": body["meta"]["page"]})
        return original(body, status, headers)

    api._json = no_total  # type: ignore[assignment]
    try:
        assert len(moltin_client.list_integrations()) == 30
    finally:
        api._json = original  # type: ignore[assignment]


def test_token_is_cached_and_renewed_after_a_401(moltin_client: MoltinClient, moltin: Emulator) -> None:
    moltin_client.list_integrations()
    moltin_client.list_integrations()
    assert len(moltin.state.tokens) == 1
    moltin.state.expire_tokens()
    moltin_client.list_integrations()
    assert len(moltin.state.tokens) == 2


def test_retries_429_and_503_honouring_retry_after(moltin_client: MoltinClient, moltin: Emulator) -> None:
    moltin_client.list_integrations()  # authenticate first
    moltin.state.faults.extend([(429, 0), (503, None), (502, None)])
    assert moltin_client.list_integrations() == []
    assert moltin.state.faults == []


def test_gives_up_after_max_retries(moltin: Emulator) -> None:
    client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url, max_retries=2, backoff=0.01)
    client.list_integrations()
    moltin.state.faults.extend([(503, None)] * 3)
    with pytest.raises(MoltinAPIError) as info:
        client.list_integrations()
    assert info.value.status == 503


def test_validation_errors_are_readable(moltin_client: MoltinClient) -> None:
    with pytest.raises(MoltinAPIError) as info:
        moltin_client.create_integration(name="x", url="not-a-url", observes=["order.paid"])
    assert info.value.status == 422
    assert "configuration.url" in str(info.value)


def test_wrong_credentials(moltin: Emulator) -> None:
    client = MoltinClient(moltin.client_id, "wrong-secret-value", base_url=moltin.url)
    with pytest.raises(MoltinAPIError) as info:
        client.list_integrations()
    assert info.value.status == 401
    assert "EPCC_CLIENT_SECRET" in str(info.value)
    assert "wrong-secret-value" not in str(info.value) + repr(client)


def test_secret_and_token_stay_out_of_reprs_and_errors(moltin_client: MoltinClient, moltin: Emulator) -> None:
    moltin_client.list_integrations()
    token = next(iter(moltin.state.tokens))
    moltin.state.faults.append((500, None))
    with pytest.raises(MoltinAPIError) as info:
        moltin_client.list_integrations()
    for text in (repr(moltin_client), str(info.value), repr(info.value)):
        assert moltin.client_secret not in text and token not in text


@pytest.fixture
def raw_server() -> Iterator[tuple[list[str], str]]:
    """A TCP server on 127.0.0.1 that misbehaves as told: 'html', 'hang' or 'reset'."""
    modes: list[str] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.recv(65536)
            mode = modes[0] if modes else "html"
            if mode == "html":
                body = b"<html><body>502 Bad Gateway</body></html>"
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                    + body
                )
                conn.close()
            elif mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
            else:  # hang: read and never answer
                time.sleep(1.5)
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield modes, f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    sock.close()


def test_html_answer_is_an_api_error(raw_server: tuple[list[str], str]) -> None:
    modes, url = raw_server
    modes.append("html")
    with pytest.raises(MoltinAPIError, match="not JSON \\(text/html\\)"):
        MoltinClient("id", "secret", base_url=url, timeout=2).list_integrations()


def test_timeout_is_a_connection_error(raw_server: tuple[list[str], str]) -> None:
    modes, url = raw_server
    modes.append("hang")
    started = time.monotonic()
    with pytest.raises(MoltinConnectionError, match="no answer within 0.3 seconds"):
        MoltinClient("id", "secret", base_url=url, timeout=0.3).list_integrations()
    assert time.monotonic() - started < 5


def test_reset_is_a_connection_error(raw_server: tuple[list[str], str]) -> None:
    modes, url = raw_server
    modes.append("reset")
    with pytest.raises(MoltinConnectionError):
        MoltinClient("id", "secret", base_url=url, timeout=2).list_integrations()


def test_unreachable_host_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(MoltinConnectionError, match="cannot connect"):
        MoltinClient("id", "secret", base_url=f"http://127.0.0.1:{port}", timeout=2).list_integrations()


def test_needs_both_credentials() -> None:
    with pytest.raises(ValueError):
        MoltinClient("", "secret")


def add_logs(moltin: Emulator, count: int) -> None:
    """Put *count* delivery logs straight into the emulator's state, for one integration."""
    add_integrations(moltin, 1, "logged")
    integration = next(iter(moltin.state.integrations))
    for n in range(count):
        moltin.state.add_log(
            {
                "id": f"log-{n}",
                "type": "integration-log",
                "succeeded": True,
                "attempt": 1,
                "body": "",
                "status_code": 200,
                "error_detail": None,
                "relationships": {
                    "integration": {"data": {"type": "integration", "id": integration}},
                    "job": {"data": {"type": "integration-job", "id": f"job-{n}"}},
                },
                "meta": {"timestamps": {"created_at": f"2026-01-01T00:00:{n:02d}.000Z"}},
            },
            trigger="order.paid",
            event_id=f"event-{n}",
        )


def test_logs_page_with_links_only_as_the_2026_spec_has_it() -> None:
    """The log endpoints answer links.first/next/prev and no totals; the client reads every page by links.next."""
    import requests

    with Emulator(page_size=4) as moltin:
        add_logs(moltin, 11)
        client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url)
        token = client._access_token()
        page = requests.get(f"{moltin.url}/v2/integrations/logs", headers={"Authorization": f"Bearer {token}"}).json()
        assert "meta" not in page and sorted(page["links"]) == ["first", "next", "prev"]
        assert page["links"]["prev"] is None and "page[offset]=4" in page["links"]["next"]
        assert [log["id"] for log in client.integration_logs()] == [f"log-{n}" for n in reversed(range(11))]
        listing = requests.get(f"{moltin.url}/v2/integrations", headers={"Authorization": f"Bearer {token}"}).json()
        assert listing["meta"]["results"]["total"] == 1  # listing integrations keeps its totals


def cursor_api(next_link: Any) -> Any:
    """An API whose log pages follow a cursor in links.next (page[offset] means nothing to it)."""
    from flask import Flask, request

    api = Flask("cursor-api")
    asked: list[str] = []
    pages = {"": ["a", "b"], "c1": ["c", "d"], "c2": ["e"]}
    following = {"": "c1", "c1": "c2", "c2": None}

    @api.post("/oauth/access_token")
    def token() -> Any:
        return {"access_token": "t", "expires_in": 3600}

    @api.get("/v2/integrations/logs")
    def logs() -> Any:
        cursor = request.args.get("cursor", "")
        asked.append(request.query_string.decode())
        if len(asked) > 6:  # a client that ignores the cursor would go round for ever
            return {"data": [], "links": {"next": None}}
        after = following[cursor]
        return {"data": [{"id": i} for i in pages[cursor]], "links": {"next": next_link(request, after)}}

    api.config["asked"] = asked
    return api


def test_the_client_follows_links_next_where_it_points(live_server: Any) -> None:
    api = cursor_api(lambda request, after: f"{request.host_url}v2/integrations/logs?cursor={after}" if after else None)
    client = MoltinClient("id", "secret", base_url=live_server(api))
    assert [log["id"] for log in client.integration_logs()] == ["a", "b", "c", "d", "e"]
    assert api.config["asked"][1:] == ["cursor=c1", "cursor=c2"]


def test_a_links_next_to_another_host_is_not_followed_with_the_token(live_server: Any) -> None:
    api = cursor_api(lambda request, after: f"http://elsewhere.invalid/v2/integrations/logs?cursor={after}")
    client = MoltinClient("id", "secret", base_url=live_server(api))
    with pytest.raises(MoltinAPIError, match="links.next points to http://elsewhere.invalid, not the API host"):
        client.integration_logs()
