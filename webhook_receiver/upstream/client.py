"""A client for the Moltin / Elastic Path integrations API.

::

    client = MoltinClient(client_id, client_secret, base_url="https://useast.api.elasticpath.com")
    for integration in client.list_integrations():
        print(integration["name"], integration["observes"])

Tokens come from the client-credentials grant and are cached until shortly
before they expire; a 401 re-authenticates once and repeats the call. 429 and
502/503/504 are retried with bounded exponential backoff that honours
``Retry-After``. Every call has a timeout. Failures raise
:class:`MoltinAPIError`, which never holds the client secret or the token.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import threading
import time
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urljoin, urlsplit

import requests

from ..errors import MoltinAPIError, MoltinConnectionError
from ..settings import flag
from ..untrusted import logger

__all__ = [
    "ALLOW_HTTP_SETTING",
    "DEFAULT_BASE_URL",
    "DEPRECATED_HOST",
    "MoltinAPIError",
    "MoltinClient",
    "MoltinConnectionError",
    "allows_http",
    "check_base_url",
]

#: The default host: Elastic Path's EU region (``https://useast.api.elasticpath.com`` is the US one).
DEFAULT_BASE_URL = "https://euwest.api.elasticpath.com"

#: Moltin's old host, deprecated; it leads to the EU region.
DEPRECATED_HOST = "api.moltin.com"


#: The setting (or environment variable) that lets the API host be plain http to another machine.
ALLOW_HTTP_SETTING = "EPCC_API_ALLOW_HTTP"


def allows_http(value: object) -> bool:
    """Whether *value*, an :data:`ALLOW_HTTP_SETTING` as set, says yes: read as every boolean setting is.

    ``None`` or ``""`` (unset) is no.

    :raises ValueError: for a value that says neither yes nor no.
    """
    if value is None or value == "":
        return False
    try:
        return flag({ALLOW_HTTP_SETTING: value}, ALLOW_HTTP_SETTING)
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None


def check_base_url(url: str, *, allow_http: bool = False) -> str:
    """Check an API host URL; return it without a trailing slash.

    A URL on :data:`DEPRECATED_HOST` is accepted with a logged warning.
    Plain ``http`` is taken for this machine (``localhost``, ``127.0.0.0/8``,
    ``::1``, ``0.0.0.0``: the emulator), and to another one only with
    *allow_http* (an emulator in another container), since the client secret
    is sent with the token request.

    :raises ValueError: if it is not an ``http`` or ``https`` URL with a host,
        if it carries a login (the API takes the client id and secret), or if
        it is ``http`` to another machine. The message quotes no part of it.
    """
    try:
        parsed = urlsplit(url.strip())
        hostname = parsed.hostname
        parsed.port  # noqa: B018 - a port that is not a number is refused here, not at the first request
    except ValueError:
        raise ValueError(f"the API host must be a URL such as {DEFAULT_BASE_URL}: this one does not parse") from None
    if parsed.scheme not in ("http", "https") or not hostname:
        raise ValueError(f"the API host must be a URL such as {DEFAULT_BASE_URL}, with its scheme and host")
    if "@" in parsed.netloc:
        raise ValueError(
            "the API host URL carries a login: leave it out (the API takes the client id and secret, which are"
            " sent with the token request)"
        )
    if parsed.scheme == "http" and not allow_http and not _on_this_machine(hostname):
        raise ValueError(
            "the API host URL is plain http to another machine: the client secret would cross the network"
            f" unencrypted; use https (such as {DEFAULT_BASE_URL}), or set {ALLOW_HTTP_SETTING}=1 for an"
            " emulator elsewhere"
        )
    if parsed.hostname == DEPRECATED_HOST:
        logger.warning(
            "%s is deprecated and leads to Elastic Path's EU region: use %s (or"
            " https://useast.api.elasticpath.com for a US store)",
            DEPRECATED_HOST,
            DEFAULT_BASE_URL,
        )
    return url.strip().rstrip("/")


def _on_this_machine(hostname: str) -> bool:
    """Whether *hostname* is this machine: ``localhost``, ``127.0.0.0/8``, ``::1``, or ``0.0.0.0`` / ``::``."""
    if hostname.rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return address.is_loopback or address.is_unspecified


_RETRIED = frozenset({429, 502, 503, 504})
_TOKEN_MARGIN = 60.0
_PAGE_LIMIT = 100


class MoltinClient:
    """The integrations API of one store.

    :param client_id: the store's client id.
    :param client_secret: the store's client secret; ``/v2/integrations``
        refuses implicit tokens.
    :param base_url: the API host (see :func:`check_base_url`).
    :param timeout: seconds to wait for each answer.
    :param session: a :class:`requests.Session` to use.
    :param max_retries: retries of a call answered 429, 502, 503 or 504.
    :param backoff: the first pause before a retry, doubled each time.
    :param max_backoff: the longest pause, ``Retry-After`` included.
    :param allow_http: take a plain ``http`` API host on another machine (see :func:`check_base_url`).
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        session: requests.Session | None = None,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        allow_http: bool = False,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret are both needed")
        self.client_id = client_id
        self._client_secret = client_secret
        self.base_url = check_base_url(base_url, allow_http=allow_http)
        self.timeout = timeout
        self.session = session or requests.Session()
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<MoltinClient {self.base_url} client_id={self.client_id!r}>"

    def fingerprint_key(self) -> bytes:
        """A key derived one way from the client secret, for fingerprints of secrets kept in the store's integrations.

        Anyone who can read the integrations could test guesses of a secret
        (a broker's password a person chose) against an unkeyed fingerprint;
        a fingerprint keyed with this can be checked only with the client
        secret.
        """
        return hashlib.blake2b(self._client_secret.encode("utf-8"), person=b"whr-fp-key").digest()

    # -- integrations ----------------------------------------------------------

    def list_integrations(self) -> list[dict[str, Any]]:
        """Every integration of the store, following every page."""
        return list(self._pages("/v2/integrations"))

    def get_integration(self, integration_id: str) -> dict[str, Any]:
        """One integration. :raises MoltinAPIError: 404 if there is none."""
        return self._data("GET", f"/v2/integrations/{integration_id}")

    def create_integration(
        self,
        *,
        name: str,
        observes: Sequence[str],
        url: str | None = None,
        secret_key: str | None = None,
        description: str = "",
        enabled: bool = True,
        integration_type: str = "webhook",
        configuration: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create an integration: a webhook to *url*, or any type with its *configuration*.

        :param name: its name.
        :param observes: the events it observes.
        :param url: a webhook's URL.
        :param secret_key: a webhook's secret, sent back in ``X-MOLTIN-SECRET-KEY``.
        :param description: its description.
        :param enabled: whether it delivers.
        :param integration_type: ``webhook``, ``stomp`` or ``aws_sqs``.
        :param configuration: the whole configuration (instead of *url* and
            *secret_key*), such as a ``stomp`` integration's ``username``,
            ``password``, ``destination`` and ``addresses``.
        :raises ValueError: if neither *url* nor *configuration* is given.
        """
        if configuration is None:
            if url is None:
                raise ValueError("a webhook integration needs a url (or give its configuration)")
            configuration = {"url": url}
            if secret_key is not None:
                configuration = {**configuration, "secret_key": secret_key}
        fields = {
            "type": "integration",
            "integration_type": integration_type,
            "name": name,
            "description": description,
            "enabled": enabled,
            "observes": list(observes),
            "configuration": dict(configuration),
        }
        return self._data("POST", "/v2/integrations", json={"data": fields})

    def update_integration(self, integration_id: str, **fields: Any) -> dict[str, Any]:
        """Change some fields of an integration (``name``, ``observes``, ``configuration``, ...)."""
        return self._data("PUT", f"/v2/integrations/{integration_id}", json={"data": {"type": "integration", **fields}})

    def delete_integration(self, integration_id: str) -> None:
        """Delete an integration. :raises MoltinAPIError: 404 if there is none."""
        self.request("DELETE", f"/v2/integrations/{integration_id}")

    def integration_logs(self, integration_id: str | None = None) -> list[dict[str, Any]]:
        """Delivery logs, newest first: of one integration, or of all of them."""
        path = f"/v2/integrations/{integration_id}/logs" if integration_id else "/v2/integrations/logs"
        return list(self._pages(path))

    def iter_integration_logs(self, integration_id: str | None = None) -> Iterator[dict[str, Any]]:
        """As :meth:`integration_logs`, a page fetched only when the one before is used up."""
        path = f"/v2/integrations/{integration_id}/logs" if integration_id else "/v2/integrations/logs"
        return self._pages(path)

    def integration_jobs(self, integration_id: str) -> list[dict[str, Any]]:
        """The jobs (one per event delivered) of an integration."""
        return list(self._pages(f"/v2/integrations/{integration_id}/jobs"))

    def job_logs(self, integration_id: str, job_id: str) -> list[dict[str, Any]]:
        """The delivery attempts of one job."""
        return list(self._pages(f"/v2/integrations/{integration_id}/jobs/{job_id}/logs"))

    # -- transport --------------------------------------------------------------

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Call the API with a token, retrying as described in the module docs.

        :returns: the decoded JSON answer, or ``None`` for an empty one.
        :raises MoltinAPIError: for an error answer or a body that is not JSON.
        :raises MoltinConnectionError: when no answer comes.
        """
        reauthenticated = False
        attempt = 0
        while True:
            response = self._send(
                method, path, json=json, params=params, headers={"Authorization": f"Bearer {self._access_token()}"}
            )
            if response.status_code == 401 and not reauthenticated:
                reauthenticated = True
                self._forget_token()
                continue
            if response.status_code in _RETRIED and attempt < self.max_retries:
                time.sleep(self._pause(attempt, response))
                attempt += 1
                continue
            return self._decode(method, path, response)

    def _data(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        answer = self.request(method, path, json=json)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict):
            raise MoltinAPIError(f"{method} {path}: the answer has no data object")
        return data

    def _pages(self, path: str) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, following ``links.next``.

        The log endpoints (2026) page with ``links.first/next/prev`` only, no
        totals: the next page is where ``links.next`` points, and a null
        ``links.next`` is the end. A store may serve fewer items per page than
        asked, so a short page is not the last one. Without links, pages are
        asked by offset until ``meta.results.total`` or an empty page.
        """
        target = path
        params: dict[str, Any] | None = {"page[limit]": _PAGE_LIMIT, "page[offset]": 0}
        offset = 0
        followed: set[str] = set()
        while True:
            answer = self.request("GET", target, params=params)
            items = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(items, list):
                raise MoltinAPIError(f"GET {path}: the answer has no data list")
            yield from items
            offset += len(items)
            total = ((answer.get("meta") or {}).get("results") or {}).get("total")
            links = answer.get("links")
            if not items:
                return
            if isinstance(total, int) and not isinstance(total, bool) and offset >= total:
                return
            if isinstance(links, dict) and "next" in links:
                if not links["next"]:
                    return
                target, params = self._next_page(path, links["next"]), None
                if target in followed:
                    raise MoltinAPIError(f"GET {path}: links.next leads back to a page already read")
                followed.add(target)
                continue
            params = {"page[limit]": _PAGE_LIMIT, "page[offset]": offset}

    def _next_page(self, path: str, link: Any) -> str:
        """The path and query of a ``links.next`` URL, which must stay on the API host (the token goes with it)."""
        base = urlsplit(self.base_url)
        found = urlsplit(urljoin(f"{self.base_url}{path}", str(link)))
        if (found.scheme, found.netloc) != (base.scheme, base.netloc) or not found.path.startswith(base.path):
            raise MoltinAPIError(
                f"GET {path}: links.next points to {found.scheme}://{found.netloc}, not the API host"
                f" {base.scheme}://{base.netloc}; not followed"
            )
        return found.path[len(base.path) :] + (f"?{found.query}" if found.query else "")

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.base_url + path
        try:
            return self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.Timeout:
            raise MoltinConnectionError(f"{method} {url}: no answer within {self.timeout:g} seconds") from None
        except requests.ConnectionError as exc:
            reason = "the connection was reset" if "reset" in str(exc).lower() else "cannot connect"
            raise MoltinConnectionError(f"{method} {url}: {reason} (is the host right?)") from None
        except requests.RequestException as exc:
            raise MoltinConnectionError(f"{method} {url}: {type(exc).__name__}") from None

    def _pause(self, attempt: int, response: requests.Response) -> float:
        retry_after = response.headers.get("Retry-After", "")
        if retry_after.isdigit():
            return min(float(retry_after), self.max_backoff)
        pause: float = self.backoff * 2.0**attempt
        return min(pause + random.uniform(0, pause / 4), self.max_backoff)

    def _decode(self, method: str, path: str, response: requests.Response) -> Any:
        status = response.status_code
        if status == 204 or not response.content:
            if status < 400:
                return None
            raise MoltinAPIError(f"{method} {path}: answered {status} with an empty body", status=status)
        try:
            body = response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type").split(";")[0]
            raise MoltinAPIError(
                f"{method} {path}: answered {status} with a body that is not JSON ({kind});"
                " is EPCC_API_BASE_URL the API host?",
                status=status,
            ) from None
        if status < 400:
            return body
        errors = body.get("errors") if isinstance(body, dict) else None
        errors = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
        raise MoltinAPIError(_describe(method, path, status, errors), status=status, errors=errors)

    # -- tokens -------------------------------------------------------------------

    def _access_token(self) -> str:
        with self._lock:
            if self._token is None or time.time() >= self._token_expires - _TOKEN_MARGIN:
                self._authenticate()
            assert self._token is not None
            return self._token

    def _forget_token(self) -> None:
        with self._lock:
            self._token = None

    def _authenticate(self) -> None:
        path = "/oauth/access_token"
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self._client_secret}
        attempt = 0
        while True:
            response = self._send("POST", path, data=form)
            if response.status_code in _RETRIED and attempt < self.max_retries:
                time.sleep(self._pause(attempt, response))
                attempt += 1
                continue
            break
        if response.status_code in (400, 401, 403, 422):
            raise MoltinAPIError(
                f"authentication failed ({response.status_code}): check the client id and client"
                " secret (EPCC_CLIENT_ID, EPCC_CLIENT_SECRET) and the host (EPCC_API_BASE_URL)",
                status=response.status_code,
            )
        body = self._decode("POST", path, response)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise MoltinAPIError(
                "POST /oauth/access_token: the answer has no access_token", status=response.status_code
            )
        expires = body.get("expires")
        expires_in = body.get("expires_in")
        if isinstance(expires, (int, float)):
            self._token_expires = float(expires)
        elif isinstance(expires_in, (int, float)):
            self._token_expires = time.time() + float(expires_in)
        else:
            self._token_expires = time.time() + 3600
        self._token = token


def _describe(method: str, path: str, status: int, errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors[:3]:
        text = str(error.get("title") or "error")
        if error.get("detail"):
            text += f": {error['detail']}"
        pointer = (error.get("source") or {}).get("pointer") if isinstance(error.get("source"), dict) else None
        if pointer:
            text += f" ({pointer})"
        parts.append(text)
    what = "; ".join(parts) or "no error details"
    hint = {
        401: " (check the credentials)",
        404: " (no such integration?)",
        429: " (rate limited; try again later)",
    }.get(status, "")
    return f"{method} {path}: {status} {what}{hint}"
