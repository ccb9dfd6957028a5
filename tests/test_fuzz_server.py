"""Fuzzing a real server: header values of arbitrary bytes and ids of arbitrary code points, over gunicorn.

The test client cannot send what a socket can (bytes that are not latin-1
text, padding that gunicorn strips and werkzeug does not), so requests are
written by hand on a raw socket to gunicorn running ``tests/service_app.py``
with its default SQLite store (which must encode every id it keeps).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook_receiver.testing import make_event

from .processes import Processes
from .service_app import SECRET, read_output


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    folder = tmp_path_factory.mktemp("fuzz-server")
    procs = Processes({"WHR_INSTANCE": str(folder), "WHR_OUTPUT": str(folder / "effects.jsonl")})
    url = procs.gunicorn(folder / "gunicorn.log", workers=2)
    yield int(url.split(":")[2].split("/")[0]), folder / "effects.jsonl"
    procs.stop_all()


def post(port: int, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request written on a raw socket; the status, the headers and the body of the answer."""
    head = b"POST /webhooks/moltin HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    head += b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    raw_headers, _, content = rest.partition(b"\r\n\r\n")
    fields = dict(line.decode("latin-1").split(": ", 1) for line in raw_headers.split(b"\r\n") if b": " in line)
    return int(status_line.split()[1]), {k.lower(): v for k, v in fields.items()}, content


header_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()), max_size=12)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    secret=st.one_of(
        st.just(SECRET.encode()),
        header_bytes,
        st.sampled_from([b" " + SECRET.encode(), SECRET.encode() + b"\t", SECRET.upper().encode()]),
    ),
    trigger=st.one_of(st.just(b"order.paid"), header_bytes),
    event_id=st.one_of(st.uuids().map(str), any_text),
)
def test_no_5xx_and_no_unverified_handler_call_over_gunicorn(
    server: tuple[int, Path], secret: bytes, trigger: bytes, event_id: str
) -> None:
    port, effects = server
    event = dict(make_event("order.paid"), id=event_id, configuration={"url": "u", "secret_key": SECRET})
    body = json.dumps(event).encode()  # ensure_ascii: every code point arrives escaped, surrogates too
    before = len(read_output(str(effects)))
    status, headers, content = post(
        port, [(b"X-MOLTIN-SECRET-KEY", secret), (b"X-MOLTIN-INTEGRATION-TRIGGER", trigger)], body
    )
    assert status < 500, content[:300]
    ran = len(read_output(str(effects))) > before
    if secret.strip(b" \t") != SECRET.encode():
        assert not ran, "no handler ran without the right secret"
    if "application/json" in headers.get("content-type", ""):
        answer: Any = json.loads(content)
        if ran:
            assert status == 200 and answer == {"id": event_id, "status": "processed"}
