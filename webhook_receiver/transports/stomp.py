"""STOMP: the queue of ``stomp`` integrations (RabbitMQ, ActiveMQ, Amazon MQ), with stomp.py (extra ``[stomp]``).

URLs: ``stomp://user:password@host:61613/queue/NAME`` or ``stomp+ssl://...:61614/...``;
several URLs are the addresses of one broker pair, tried in turn (failover),
as upstream's ``addresses``. The credentials may come from the environment
instead (``WEBHOOK_RECEIVER_STOMP_USERNAME``, ``WEBHOOK_RECEIVER_STOMP_PASSWORD``);
they are shown masked everywhere. The query may set ``vhost`` (``/`` by
default: RabbitMQ takes STOMP's ``host`` header as the virtual host).

The subscription acknowledges each message on its own (``ack:
client-individual``) and asks for a bounded prefetch (``prefetch-count`` for
RabbitMQ, ``activemq.prefetchSize`` for ActiveMQ). A message to give back is
``NACK``\\ ed (RabbitMQ requeues it); poison is ``NACK``\\ ed with ``requeue:
false``, which dead-letters it on a queue with a dead-letter exchange.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import re
import threading
from typing import Any, Mapping, NamedTuple, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from ..untrusted import UNSAFE, printable
from .consumer import MASK, Message, Transport, TransportUnavailable, check_counts

__all__ = ["PASSWORD_VARIABLE", "USERNAME_VARIABLE", "StompAddress", "StompTransport", "parse_url", "stomp_module"]

#: The environment variables the credentials may come from.
USERNAME_VARIABLE = "WEBHOOK_RECEIVER_STOMP_USERNAME"
PASSWORD_VARIABLE = "WEBHOOK_RECEIVER_STOMP_PASSWORD"

SCHEMES = {"stomp": False, "stomp+ssl": True, "stomp+tls": True}
DEFAULT_PORTS = {False: 61613, True: 61614}

_subscription_ids = itertools.count(1)


#: A ``passcode`` header in a line of stomp.py's (``b'passcode:secret\\n'`` in its DEBUG lines), up to the
#: escaped line feed that ends every header (any other escape, a quote, UTF-8 bytes, are part of it).
_PASSCODE = re.compile(r"passcode:(?:\\[^n]|[^\\\n])*")


class _MaskPasscode(logging.Filter):
    """stomp.py logs each frame it sends at DEBUG, the CONNECT frame's ``passcode`` header too: masked here."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "passcode" in text:
            record.msg, record.args = _PASSCODE.sub("passcode:" + MASK, text), ()
        return True


def stomp_module() -> Any:
    """stomp.py, its DEBUG lines' ``passcode`` masked; a :class:`RuntimeError` naming the extra when it is missing."""
    try:
        import stomp
    except ImportError:
        raise RuntimeError("consuming from STOMP needs stomp.py: pip install 'webhook_receiver[stomp]'") from None
    stomp_logger = logging.getLogger("stomp.py")
    if not any(isinstance(f, _MaskPasscode) for f in stomp_logger.filters):
        stomp_logger.addFilter(_MaskPasscode())
    return stomp


_stomp = stomp_module


class _Handle:
    """What an ACK or NACK of a message needs: its ``ack`` header, and which connection it came on."""

    __slots__ = ("ack_id", "generation")

    def __init__(self, ack_id: str, generation: int) -> None:
        self.ack_id, self.generation = ack_id, generation


class _Inbox:
    """The messages stomp.py's receiver thread hands over, taken by the consumer as many at a time as there are.

    A :class:`queue.Queue` takes its lock once a message on each side; a
    batch here takes it once.
    """

    __slots__ = ("_messages", "_ready")

    def __init__(self) -> None:
        self._messages: collections.deque[Message] = collections.deque()
        self._ready = threading.Condition(threading.Lock())

    def put(self, message: Message) -> None:
        """Add *message* (stomp.py's thread)."""
        with self._ready:
            self._messages.append(message)
            self._ready.notify()

    def take(self, most: int, timeout: float) -> list[Message]:
        """Up to *most* messages, waiting up to *timeout* seconds for the first; ``[]`` if none came."""
        messages = self._messages
        with self._ready:
            if not messages and not self._ready.wait_for(lambda: bool(messages), timeout):
                return []
            count = min(most, len(messages))
            return [messages.popleft() for _ in range(count)]


class _Listener:
    """stomp.py's callbacks (its receiver thread): messages into a local queue, errors and disconnection noted."""

    def __init__(self, inbox: _Inbox, generation: int) -> None:
        self.inbox = inbox
        self.generation = generation
        #: The receipt asked for with the UNSUBSCRIBE frame, and set once the broker sent it.
        self.receipt = f"webhook-receiver-unsubscribed-{generation}"
        self.unsubscribed = threading.Event()
        self.lost: str | None = None

    def on_message(self, frame: Any) -> None:
        headers: Mapping[str, str] = frame.headers
        ack_id = headers.get("ack") or headers.get("message-id", "")
        body = frame.body if isinstance(frame.body, bytes) else str(frame.body).encode()
        self.inbox.put(
            Message(
                body=body,
                message_id=headers.get("message-id", "?"),
                attempt=2 if headers.get("redelivered") == "true" else 1,
                handle=_Handle(ack_id, self.generation),
            )
        )

    def on_error(self, frame: Any) -> None:
        self.lost = f"the broker reported an error: {frame.headers.get('message', 'no message')}"

    def on_receipt(self, frame: Any) -> None:
        if frame.headers.get("receipt-id") == self.receipt:
            self.unsubscribed.set()

    def on_disconnected(self) -> None:
        if self.lost is None:
            self.lost = "the connection closed"

    def on_heartbeat_timeout(self) -> None:
        """stomp.py's heart-beat thread calls it unguarded: without it, that thread died with a traceback."""
        if self.lost is None:
            self.lost = "the broker's heart-beats stopped"


class StompTransport(Transport):
    """One STOMP destination on one broker (or a failover pair).

    :param urls: the broker's addresses, each ``stomp://`` or ``stomp+ssl://``
        with the destination as its path (the same in each, or left out after
        the first).
    :param prefetch: messages the broker may send ahead of acknowledgements.
    :param environ: where credentials missing from the URLs are read
        (``os.environ`` by default).
    :param heartbeats: STOMP heart-beats in milliseconds (sent, expected), so
        that a dead broker is noticed.
    :raises ValueError: if a URL is not a STOMP URL, the destination is
        missing or differs, or the credentials are half given.
    """

    name = "stomp"
    lingers = True

    def __init__(
        self,
        urls: Sequence[str],
        *,
        prefetch: int = 4,
        environ: Mapping[str, str] | None = None,
        heartbeats: tuple[int, int] = (10_000, 10_000),
    ) -> None:
        if not urls:
            raise ValueError("give at least one stomp:// URL")
        check_counts(prefetch=prefetch)
        environ = os.environ if environ is None else environ
        self.addresses: list[tuple[str, int, bool]] = []
        self.destination = ""
        self.vhost = "/"
        username: str | None = None
        password: str | None = None
        for url in urls:
            host, port, tls, destination, user, secret, query = _parse(url)
            self.addresses.append((host, port, tls))
            if destination:
                if self.destination and destination != self.destination:
                    raise ValueError("every STOMP URL of one consumer names the same destination")
                self.destination = destination
            if user is not None and username is None:
                username, password = user, secret
            if "vhost" in query:
                self.vhost = query["vhost"]
        if not self.destination:
            raise ValueError("the STOMP URL has no destination: stomp://host:61613/queue/NAME")
        if username is None:
            username = environ.get(USERNAME_VARIABLE) or None
        if password is None:
            password = environ.get(PASSWORD_VARIABLE) or None
        if password is not None and username is None:
            raise ValueError(f"a STOMP password without a user name: put it in the URL or in {USERNAME_VARIABLE}")
        _refuse_breaks("the STOMP user name or password", username, password)
        self.username = username
        self._password = password
        self.prefetch = prefetch
        self.heartbeats = heartbeats
        self._inbox = _Inbox()
        self._connection: Any = None
        self._listener: _Listener | None = None
        self._generation = 0
        self._subscription = ""
        self._lock = threading.Lock()
        self._timers: set[threading.Timer] = set()

    @property
    def description(self) -> str:
        user = (
            f"{self.username}:{MASK}@"
            if self.username and self._password
            else (f"{self.username}@" if self.username else "")
        )
        host, port, tls = self.addresses[0]
        more = f" (and {len(self.addresses) - 1} failover address(es))" if len(self.addresses) > 1 else ""
        return f"{'stomp+ssl' if tls else 'stomp'}://{user}{host}:{port}{self.destination}{more}"

    def connect(self) -> None:
        stomp = _stomp()
        self.close()
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._inbox = _Inbox()
        connection = stomp.Connection12(
            host_and_ports=[(host, port) for host, port, _ in self.addresses],
            vhost=self.vhost,
            heartbeats=self.heartbeats,
            reconnect_attempts_max=1,
            auto_decode=False,
            timeout=10.0,
        )
        for host, port, tls in self.addresses:
            if tls:
                connection.set_ssl(for_hosts=[(host, port)])
        listener = _Listener(self._inbox, generation)
        connection.set_listener("webhook-receiver", listener)
        subscription = f"webhook-receiver-{os.getpid()}-{next(_subscription_ids)}"
        try:
            connection.connect(self.username, self._password, wait=True)
            connection.subscribe(
                self.destination,
                id=subscription,
                ack="client-individual",
                headers={"prefetch-count": str(self.prefetch), "activemq.prefetchSize": str(self.prefetch)},
            )
        except Exception as exc:  # stomp.py's exceptions carry no credential; say which kind it was
            reason = listener.lost or type(exc).__name__
            try:
                connection.disconnect()
            except Exception:  # noqa: BLE001
                pass
            raise TransportUnavailable(f"cannot connect to {self.description}: {reason}") from None
        with self._lock:
            self._connection, self._listener = connection, listener
            self._subscription = subscription

    def receive(self, max_messages: int, timeout: float) -> list[Message]:
        listener = self._listener
        if listener is None or listener.lost is not None:
            raise TransportUnavailable(listener.lost if listener is not None else "not connected")
        return self._inbox.take(max_messages, timeout)

    def buffered(self) -> list[Message]:
        return self._inbox.take(1 << 30, 0.0)

    def stop_receiving(self) -> None:
        """UNSUBSCRIBE, and wait (up to 2 s) for the broker's receipt: every message sent before it is in."""
        with self._lock:
            connection, listener = self._connection, self._listener
        if connection is None or listener is None:
            return
        connection.unsubscribe(self._subscription, headers={"receipt": listener.receipt})
        listener.unsubscribed.wait(2.0)

    def _send(self, message: Message, verb: str, **headers: str) -> None:
        handle: _Handle = message.handle
        with self._lock:
            connection = self._connection if handle.generation == self._generation else None
        if connection is None:  # the connection it came on is gone: the broker delivers it again
            return
        if verb == "ack":
            connection.ack(handle.ack_id)
        else:
            connection.nack(handle.ack_id, **headers)

    def ack(self, message: Message) -> None:
        self._send(message, "ack")

    def ack_many(self, messages: list[Message]) -> None:
        """ACK frames for every message, sent in one socket write (stomp.py writes one frame a call)."""
        with self._lock:
            connection, generation = self._connection, self._generation
        frames = [
            b"ACK\nid:" + _escape(message.handle.ack_id).encode() + b"\n\n\x00"
            for message in messages
            if message.handle.generation == generation  # else its connection is gone: the broker delivers it again
        ]
        transport = getattr(connection, "transport", None)
        send = getattr(transport, "send", None)
        if not frames or send is None or len(frames) == 1:
            for message in messages:
                self.ack(message)
            return
        send(b"".join(frames))

    def retry(self, message: Message, delay: float) -> None:
        if delay <= 0:
            self._send(message, "nack", requeue="true")
            return
        timer = threading.Timer(delay, self._nack_later, (message,))
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def _nack_later(self, message: Message) -> None:
        with self._lock:
            self._timers = {t for t in self._timers if t.is_alive() and t is not threading.current_thread()}
        try:
            self._send(message, "nack", requeue="true")
        except Exception:  # noqa: BLE001 - unacknowledged either way: the broker delivers it again
            pass

    def dead_letter(self, message: Message, reason: str) -> str:
        self._send(message, "nack", requeue="false")
        return "rejected without requeue (NACK requeue:false): the queue's dead-letter exchange, if any, keeps it"

    def close(self) -> None:
        with self._lock:
            connection, self._connection, self._listener = self._connection, None, None
            timers, self._timers = self._timers, set()
            self._generation += 1
        for timer in timers:
            timer.cancel()
        if connection is not None:
            try:
                connection.disconnect()
            except Exception:  # noqa: BLE001 - what it did not acknowledge is redelivered anyway
                pass


#: What a CONNECT frame's header cannot hold: stomp.py sends the credentials as they are, unescaped.
_BREAKS = re.compile(r"[\r\n\x00]")


def _refuse_breaks(what: str, *credentials: str | None) -> None:
    """Refuse credentials a CONNECT frame cannot carry, saying *what* they are (never their value)."""
    if any(_BREAKS.search(text) for text in credentials if text):
        raise ValueError(f"{what} holds a line break or NUL, which STOMP cannot send")


#: STOMP 1.2's escapes of a header value.
_ESCAPES = str.maketrans({"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"})


def _escape(value: str) -> str:
    """A header value escaped as STOMP 1.2 says (stomp.py does the same to the frames it writes)."""
    return value.translate(_ESCAPES)


class StompAddress(NamedTuple):
    """What a STOMP URL says (see :func:`parse_url`)."""

    #: The broker's host.
    host: str
    #: Its port (61613, or 61614 with TLS, when the URL gives none).
    port: int
    #: Whether the URL is ``stomp+ssl://`` (or ``stomp+tls://``).
    tls: bool
    #: The destination (the URL's path), or ``""``.
    destination: str
    #: The user name, or ``None``.
    username: str | None
    #: The password, or ``None``; never shown.
    password: str | None
    #: The query's parameters (``vhost``).
    query: dict[str, str]

    def __repr__(self) -> str:
        return f"StompAddress({self.host!r}, {self.port}, tls={self.tls}, destination={self.destination!r})"


def parse_url(url: str) -> StompAddress:
    """The parts of a STOMP URL, ``stomp://user:password@host:61613/queue/NAME``.

    :raises ValueError: if it is not a STOMP URL; the message never quotes it.
    """
    return StompAddress(*_parse(url))


def _parse(url: str) -> tuple[str, int, bool, str, str | None, str | None, dict[str, str]]:
    """``(host, port, tls, destination, user, password, query)`` of a STOMP URL; errors never quote the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("a STOMP URL is malformed (its port?): stomp://user:password@host:61613/queue/NAME") from None
    if parts.scheme not in SCHEMES:
        raise ValueError("a STOMP URL starts with stomp:// or stomp+ssl://")
    if not parts.hostname:
        raise ValueError("a STOMP URL has no host: stomp://host:61613/queue/NAME")
    tls = SCHEMES[parts.scheme]
    query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - {"vhost"})
    if unknown:
        raise ValueError(f"a STOMP URL has an unknown parameter {printable(unknown[0])!r}: only vhost is known")
    if "vhost" in query and not query["vhost"]:
        raise ValueError("a STOMP URL's vhost is empty: leave it out for the default, /")
    if "@" in parts.path:  # a password with a "/" cut the user info short: the rest of it would show as the path
        raise ValueError("a STOMP URL's user name or password holds a '/' or an '@': percent-encode it (%2F, %40)")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and user is None:
        raise ValueError("a STOMP URL has a password without a user name: stomp://user:password@host:61613/...")
    _refuse_breaks("a STOMP URL's user name or password", user, password)
    destination = unquote(parts.path)
    if UNSAFE.search(destination):  # %0A and the like: a frame header's line break, a forged log line
        raise ValueError("a STOMP URL's destination holds a control character")
    return (
        parts.hostname,
        port or DEFAULT_PORTS[tls],
        tls,
        destination if destination != "/" else "",
        user,
        password,
        query,
    )
