"""Running the Moltin stand-in on a real port of 127.0.0.1."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import threading
from types import TracebackType
from typing import Any, Mapping, Sequence

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from ...untrusted import protect
from .api import create_api
from .firing import DEFAULT_RETRY_DELAYS, Fired, Firer
from .state import EmulatorState

__all__ = ["Emulator", "is_loopback"]

logger = protect(logging.getLogger("webhook_receiver.emulator"))


def is_loopback(host: str) -> bool:
    """Whether *host* is a loopback address or name (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class Emulator:
    """A local Moltin-like API that really delivers webhooks.

    ::

        with Emulator() as moltin:
            client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url)
            ...
            moltin.fire("order.paid")
            moltin.wait_idle()

    :param client_id: the client id its token endpoint accepts.
    :param client_secret: the client secret its token endpoint accepts.
    :param host: the address to listen on.
    :param port: the port; 0 picks a free one.
    :param retry_delays: the pause before each delivery retry, in seconds.
    :param timeout: how long a delivery waits for an answer.
    :param quiet: do not log each request it serves.
    :param page_size: the most items a list endpoint serves per page, as a
        store that serves fewer than ``page[limit]`` does (25 by default).
    :param sqs_endpoint_url: the SQS endpoint ``aws_sqs`` integrations are
        delivered through (moto's server in tests); AWS's when ``None``.
    """

    def __init__(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        timeout: float = 10.0,
        quiet: bool = True,
        page_size: int = 25,
        sqs_endpoint_url: str | None = None,
    ) -> None:
        #: The credentials its token endpoint accepts: fresh ones unless given.
        self.client_id = client_id or f"emulator-{secrets.token_hex(4)}"
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.state = EmulatorState(self.client_id, self.client_secret, page_size=page_size)
        self.firer = Firer(self.state, retry_delays=retry_delays, timeout=timeout, sqs_endpoint_url=sqs_endpoint_url)
        self.app = create_api(self.state, self.firer)
        self._host = host
        self._port = port
        self._handler = _QuietHandler if quiet else WSGIRequestHandler
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<Emulator {self.url if self._server else 'stopped'}>"

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:8765``, once started."""
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return f"http://{self._host}:{self._server.server_port}"

    def _warn_when_exposed(self) -> None:
        if not is_loopback(self._host):
            logger.warning(
                "the Moltin emulator listens on %s, not a loopback address: anyone who reaches this"
                " machine can fire events (POST /emulator/fire has no authentication) and, with the"
                " client credentials, read the integrations' secrets. Use 127.0.0.1 unless you mean it.",
                self._host,
            )

    def start(self) -> Emulator:
        """Start serving in a background thread; returns itself."""
        if self._server is None:
            self._warn_when_exposed()
            self._server = make_server(self._host, self._port, self.app, threaded=True, request_handler=self._handler)
            server = self._server
            self._thread = threading.Thread(
                target=lambda: server.serve_forever(poll_interval=0.05), name="moltin-emulator", daemon=True
            )
            self._thread.start()
        return self

    def bind(self) -> Emulator:
        """Take the port now, so that a port in use is known before anything is printed.

        :raises OSError: if the address cannot be listened on.
        """
        if self._server is None:
            self._warn_when_exposed()
            if self._port:  # werkzeug exits the process on a port in use: find out first, and raise
                socket.create_server((self._host.strip("[]"), self._port)).close()
            self._server = make_server(self._host, self._port, self.app, threaded=True, request_handler=self._handler)
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (binding first, unless :meth:`bind` did)."""
        self.bind()
        assert self._server is not None
        try:
            self._server.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop retrying deliveries and stop serving."""
        self.firer.close()
        if self._server is not None:
            if self._thread is not None:
                self._server.shutdown()
                self._thread.join(timeout=10)
            self._server.server_close()
            self._server = None
            self._thread = None

    def fire(
        self, trigger: str, data: Mapping[str, Any] | None = None, *, event_id: str | None = None, included: Any = None
    ) -> Fired:
        """Deliver an event to every enabled integration observing it (webhooks, STOMP and SQS queues).

        See :meth:`~webhook_receiver.emulator.firing.Firer.fire`.
        """
        return self.firer.fire(trigger, data, event_id=event_id, included=included)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every delivery, retries included, has ended."""
        return self.firer.wait_idle(timeout)

    def logs(self) -> list[dict[str, Any]]:
        """Every delivery attempt so far, oldest first, as upstream's log envelopes."""
        with self.state.lock:
            return list(self.state.logs)

    def delivered(self, log: dict[str, Any]) -> tuple[str, str]:
        """The trigger and event id a log of :meth:`logs` delivered (upstream's envelope does not say)."""
        with self.state.lock:
            return self.state.log_events[log["id"]]

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
