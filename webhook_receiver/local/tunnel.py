"""Public URLs for a local app, so that a real store can deliver to a laptop.

Providers: ``ngrok`` (through pyngrok, extra ``[tunnel]``), ``cloudflared``
(the binary on the PATH, a quick tunnel), ``url`` (a public URL you already
have, from any tunnel you run yourself) and ``loopback`` (no tunnel at all:
``http://127.0.0.1:<port>``, for tests against the local emulator).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from typing import Any, Protocol

from ..errors import TunnelError

__all__ = ["Tunnel", "TunnelError", "open_tunnel"]

PROVIDERS = ("ngrok", "cloudflared", "url", "loopback")


class Tunnel(Protocol):
    """An open tunnel."""

    public_url: str

    def close(self) -> None:
        """Close the tunnel."""


class _Fixed:
    def __init__(self, public_url: str) -> None:
        self.public_url = public_url.rstrip("/")

    def close(self) -> None:
        pass


class _Ngrok:
    def __init__(self, port: int) -> None:
        try:
            from pyngrok import ngrok
        except ImportError:
            raise TunnelError("the ngrok provider needs pyngrok: pip install 'webhook_receiver[tunnel]'") from None
        self._ngrok = ngrok
        try:
            self._tunnel = ngrok.connect(str(port), "http")
        except Exception as exc:  # pyngrok raises several kinds
            raise TunnelError(f"ngrok could not open a tunnel: {type(exc).__name__}: {exc}") from None
        self.public_url = str(self._tunnel.public_url).replace("http://", "https://", 1).rstrip("/")

    def close(self) -> None:
        self._ngrok.disconnect(self._tunnel.public_url)


class _Cloudflared:
    _URL = re.compile(rb"https://[-a-z0-9]+\.trycloudflare\.com")

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        binary = shutil.which("cloudflared")
        if binary is None:
            raise TunnelError("the cloudflared provider needs the cloudflared binary on the PATH")
        self._proc = subprocess.Popen(
            [binary, "tunnel", "--no-autoupdate", "--url", f"http://127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        found: list[str] = []

        def scan() -> None:
            assert self._proc.stderr is not None
            for line in self._proc.stderr:
                match = self._URL.search(line)
                if match and not found:
                    found.append(match.group(0).decode())

        threading.Thread(target=scan, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise TunnelError("cloudflared did not print a public URL")
            time.sleep(0.1)
        self.public_url = found[0]

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def open_tunnel(provider: str, port: int, *, public_url: str | None = None) -> Any:
    """Open a tunnel to ``127.0.0.1:<port>``.

    :param provider: one of :data:`PROVIDERS`.
    :param port: the local port.
    :param public_url: the URL, for the ``url`` provider.
    :raises TunnelError: if the provider is missing or fails.
    """
    if provider == "url":
        if not public_url or not public_url.startswith(("http://", "https://")):
            raise TunnelError("give the public URL of your tunnel: --public-url https://...")
        if "?" in public_url or "#" in public_url:  # the receiver's path goes after it: it would land in the query
            raise TunnelError("the public URL takes no query or fragment: --public-url https://HOST[/PATH]")
        return _Fixed(public_url)
    if provider == "loopback":
        return _Fixed(f"http://127.0.0.1:{port}")
    if provider == "ngrok":
        return _Ngrok(port)
    if provider == "cloudflared":
        return _Cloudflared(port)
    raise TunnelError(f"unknown provider {provider!r}: use one of {', '.join(PROVIDERS)}")
