"""The Flask extension: :class:`WebhookReceiver`."""

from __future__ import annotations

import dataclasses
import threading
import weakref
from typing import Any, Callable, Sequence, TypeVar

from flask import Blueprint, Flask, Response, current_app
from flask.blueprints import BlueprintSetupState

from .catalogue import check_pattern, expand, is_event_name
from .config import ReceiverConfig, read_config
from .delivery import receive
from .handlers import EventHandler, Handler, HandlerRegistry, callable_name, signal_handlers
from .inbox import mount_inbox
from .observability.setup import observe
from .signals import TriggerSignal
from .stores.base import EventStore

__all__ = ["WebhookReceiver"]

F = TypeVar("F", bound=EventHandler)

#: The key of ``app.extensions`` holding each receiver's configuration by name.
EXTENSION_KEY = "webhook_receiver"
#: The key of ``app.extensions`` holding the receivers themselves by name.
RECEIVERS_KEY = "webhook_receiver.receivers"
#: The key of ``app.extensions`` holding the name of the receiver mounted at each URL.
MOUNTS_KEY = "webhook_receiver.mounts"

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class WebhookReceiver:
    """Receives Moltin webhooks on a Flask app and routes them to handlers.

    ::

        receiver = WebhookReceiver()

        @receiver.on("order.paid")
        def ship(event):
            ...

        def create_app():
            app = Flask(__name__)
            app.config["WEBHOOK_RECEIVER_SECRET_KEY"] = "..."
            receiver.init_app(app)
            return app

    Handlers belong to the receiver, not to an app: they can be registered
    before :meth:`init_app` and serve every app the receiver is set up on.

    :param app: an app to set up at once, as with :meth:`init_app`.
    :param name: tells several receivers of one app apart; it names the
        blueprint (``webhook_receiver_<name>``), salts derived secrets, is
        the default URL's last part and the key of the receiver's own
        settings in ``WEBHOOK_RECEIVERS``.
    :param url: where to mount the endpoint; wins over the receiver's
        ``WEBHOOK_RECEIVERS`` entry and ``WEBHOOK_RECEIVER_URL``.
    :param secret_key: the accepted secret, or a list of them oldest to
        newest; wins over the receiver's entry and ``WEBHOOK_RECEIVER_SECRET_KEY``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        name: str = "moltin",
        url: str | None = None,
        secret_key: str | Sequence[str] | None = None,
    ) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError("name must be letters, digits, '-' and '_', such as 'moltin'")
        self.name = name
        self._url = url
        self._secret_key = secret_key
        self._handlers = HandlerRegistry()
        self._signals: dict[str, TriggerSignal] = {}
        self._signals_lock = threading.Lock()
        self._stores: weakref.WeakSet[EventStore] = weakref.WeakSet()  # of the apps set up, for on() to check

        #: The blueprint holding the endpoint. :meth:`init_app` mounts it; it
        #: can also be mounted by hand, with a ``url_prefix`` of your choice.
        self.blueprint = Blueprint(f"webhook_receiver_{name.replace('-', '_')}", __name__)
        self.blueprint.record(self._setup_blueprint)

        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<WebhookReceiver {self.name!r} handlers={len(self._handlers)}>"

    # -- setting up an app ---------------------------------------------------

    def init_app(self, app: Flask, *, celery: Any = None) -> None:
        """Set up *app*: read the configuration and mount the endpoint.

        Each key below is read, by precedence, from the constructor's
        argument (``url``, ``secret_key``), then this receiver's entry of
        ``WEBHOOK_RECEIVERS`` (the key without its ``WEBHOOK_RECEIVER_``
        prefix: ``app.config["WEBHOOK_RECEIVERS"] = {"outlet": {"URL":
        "/hooks/outlet"}}``), then the app-wide key, then the default, which
        is this receiver's own (``/webhooks/<name>``). Nothing is written into
        ``app.config``, so that two receivers of one app never inherit each
        other's defaults. A ``WEBHOOK_RECEIVER_*`` key (or entry key) that is
        not one of these is an
        :class:`~webhook_receiver.errors.UnknownSettingWarning` naming the
        nearest known key. Number keys take numbers or strings of them
        (``"8"``, ``"2.5"``: environment variables); NaN and infinity are
        refused. The keys:

        ``WEBHOOK_RECEIVER_SECRET_KEY``
            The secret Moltin sends in ``X-MOLTIN-SECRET-KEY``, or a list of
            them, oldest to newest: any is accepted, so a secret can be
            rotated without dropping a delivery. An ``app.config`` key: from
            the environment, export ``FLASK_WEBHOOK_RECEIVER_SECRET_KEY`` and
            call ``app.config.from_prefixed_env()`` before this method.
        ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS`` (Flask's own)
            Used when ``WEBHOOK_RECEIVER_SECRET_KEY`` is unset: the webhook
            secret is derived from them, salted with the receiver's name.
            :meth:`secret_key` tells the value to register upstream.
        ``WEBHOOK_RECEIVER_ALLOW_NO_SECRET``
            ``False`` by default: with no secret at all, this method raises
            :class:`RuntimeError`. ``True`` accepts every delivery unchecked,
            with a warning; for local experiments only.
        ``WEBHOOK_RECEIVER_URL``
            Where the endpoint is mounted; ``/webhooks/<name>``
            (``/webhooks/moltin``) by default.
        ``WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH``
            The largest body accepted, in bytes; 1 MiB by default.
        ``WEBHOOK_RECEIVER_STORE``
            Where events and handler outcomes are kept: a SQLite file in the
            instance folder by default (a memory store of the app's own when
            ``TESTING`` is set); ``"sqlite:///path"`` (relative to the
            instance folder) or ``"sqlite:////absolute/path"``,
            ``"redis://host:port/db"`` (extra ``[redis]``), ``"memory://"``, or
            an :class:`~webhook_receiver.stores.EventStore`. Receivers may
            share one: each sees only its own events
            (:meth:`~webhook_receiver.stores.EventStore.for_receiver`).
        ``WEBHOOK_RECEIVER_DISPATCH``
            Who runs the handlers: ``"inline"`` (the default; in the request,
            the answer reflects them), ``"thread"`` (202 once the event is
            stored; worker threads of each process take it from the store),
            ``"celery"`` (202 once it is stored and a wake-up task enqueued;
            the default when *celery* is given), or a
            :class:`~webhook_receiver.dispatch.Dispatcher` instance.
        ``WEBHOOK_RECEIVER_INLINE_DEADLINE``
            Inline dispatch: seconds after which a delivery whose handlers
            still run is answered 202 while they go on in the background
            (8 with a durable store); ``None`` waits for them. Refused with
            the memory store.
        ``WEBHOOK_RECEIVER_THREADS``, ``WEBHOOK_RECEIVER_MAX_ATTEMPTS``, ``WEBHOOK_RECEIVER_RETRY_BACKOFF``
            Background dispatch: the worker threads per process (4), the runs
            of an event before it is left failed (5), and the first pause
            between runs in seconds, doubled each time (2.0).
        ``WEBHOOK_RECEIVER_MAX_BACKLOG``
            Background dispatch: past this many events due and not yet taken
            (10,000), a new delivery gets 503 and upstream retries later.
        ``WEBHOOK_RECEIVER_GRACE_SECONDS``
            Background dispatch: how long running handlers may finish when
            the process stops (10); the rest stays due in the store.
        ``WEBHOOK_RECEIVER_LEASE_SECONDS``
            How long a claim on an event is exclusive (60), renewed every
            third of it while a handler runs; a worker that died mid-handler
            blocks the event no longer than that. A store instance keeps the
            lease it was built with: this key set to another value beside one
            is refused (pass ``lease_seconds`` to the store's constructor).
        ``WEBHOOK_RECEIVER_REDIS_PREFIX``
            The key prefix of a Redis store built from a URL
            (``webhook_receiver:<name>``).
        ``WEBHOOK_RECEIVER_TABLE_PREFIX``
            The table-name prefix of a SQLAlchemy store built from a URL
            (``webhook_receiver_``).
        ``WEBHOOK_RECEIVER_INBOX_URL`` and ``WEBHOOK_RECEIVER_INBOX_AUTH``
            Mount the inbox page there, behind that access check (see
            :doc:`/inbox`); off by default.

        :param app: the app to set up.
        :param celery: a Celery app, for ``celery`` dispatch; the task that
            runs the handlers is registered on it.
        :raises RuntimeError: if the app has no secret and did not opt out,
            a key is malformed, this receiver's name is already set up on
            *app*, or another receiver of *app* is mounted at its URL.
        """
        config = self._configure(app, celery=celery, mounting=True)
        app.register_blueprint(self.blueprint, url_prefix=config.url)
        mount_inbox(app, self)

    def _configure(self, app: Flask, *, celery: Any = None, mounting: bool = False) -> ReceiverConfig:
        configs: dict[str, ReceiverConfig] = app.extensions.setdefault(EXTENSION_KEY, {})
        if self.name in configs:
            if app.extensions.get(RECEIVERS_KEY, {}).get(self.name) is self:
                raise RuntimeError(
                    f"webhook receiver {self.name!r} is already set up on this app: call init_app once per"
                    " app (with an app factory, once per app the factory makes)"
                )
            raise RuntimeError(
                f"another webhook receiver named {self.name!r} is already set up on this app; give the"
                " second one a name of its own: WebhookReceiver(name='...')"
            )
        config = read_config(
            app, name=self.name, url=self._url, secret_key=self._secret_key, celery=celery, first=not configs
        )
        if mounting:
            for other, taken in configs.items():
                if taken.url == config.url:
                    raise RuntimeError(
                        f"webhook receivers {other!r} and {self.name!r} would both be mounted at {config.url}:"
                        f" give {self.name!r} a URL of its own, with"
                        f' app.config["WEBHOOK_RECEIVERS"][{self.name!r}]["URL"] or'
                        f" WebhookReceiver(name={self.name!r}, url=...) (an app-wide WEBHOOK_RECEIVER_URL"
                        " is every receiver's)"
                    )
        _check_transactional([h.name for h in self._handlers if h.transactional], config.store)
        self._stores.add(config.store)
        config.store.bind(app)
        if not configs:  # the app's first receiver: what an earlier version left unnamed is its own
            config.store.adopt_earlier_data()
        else:
            config.store.leave_earlier_data_to(next(iter(configs.values())).store)
        config.dispatcher.bind(app, self, config.store)
        configs[self.name] = config
        app.extensions.setdefault(RECEIVERS_KEY, {})[self.name] = self
        observe(app, self.name, config.store, config.dispatcher, url=config.url)
        return config

    def _setup_blueprint(self, state: BlueprintSetupState) -> None:
        """Add the endpoint when the blueprint is registered, by :meth:`init_app` or by hand."""
        app: Flask = state.app  # type: ignore[assignment]
        config = app.extensions.get(EXTENSION_KEY, {}).get(self.name) or self._configure(app)
        # Checked where the rule is added: a blueprint mounted by hand has a url_prefix of its own.
        mount = (state.url_prefix or config.url).rstrip("/") or "/"
        mounts: dict[str, str] = app.extensions.setdefault(MOUNTS_KEY, {})
        other = mounts.get(mount)
        if other is not None and other != self.name:
            raise RuntimeError(
                f"webhook receivers {other!r} and {self.name!r} would both be mounted at {mount}, and every"
                f" delivery would go to {other!r}: give {self.name!r} a URL of its own"
            )
        mounts[mount] = self.name
        state.add_url_rule(
            "" if state.url_prefix else config.url,
            endpoint="receive",
            view_func=self._view,
            methods=_METHODS,
        )

    def _view(self) -> Response:
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        return receive(self, app, self.get_config(app))

    def get_config(self, app: Flask | None = None) -> ReceiverConfig:
        """The configuration this receiver read from *app* (the current app by default).

        :raises RuntimeError: if the receiver is not set up on the app.
        """
        app = app or current_app
        try:
            config: ReceiverConfig = app.extensions[EXTENSION_KEY][self.name]
        except KeyError:
            raise RuntimeError(
                f"webhook receiver {self.name!r} is not set up on this app: call receiver.init_app(app) first"
            ) from None
        return config

    def consumer(self, app: Flask, *urls: str, **options: Any) -> Any:
        """A :class:`~webhook_receiver.transports.Consumer` taking events from a queue into this receiver on *app*.

        ``receiver.consumer(app, "stomp://user@host:61613/queue/epcc-orders").run()``;
        see :doc:`/queues` for the URLs and the guarantees.

        :param urls: one SQS queue, or a STOMP broker's addresses (several: failover).
        :param options: ``concurrency``, ``grace``, ``region``, ``endpoint_url``,
            ``environ`` or ``transport``, as
            :func:`~webhook_receiver.transports.build_consumer` takes them.
        """
        from .transports.registry import build_consumer

        return build_consumer(self, app, self.get_config(app), urls, **options)

    def get_store(self, app: Flask | None = None) -> EventStore:
        """The event store used on *app* (the current app by default)."""
        return self.get_config(app).store

    def secret_key(self, app: Flask | None = None) -> str:
        """The secret to register upstream as ``configuration.secret_key``: the newest one.

        :param app: the app (the current app by default).
        :raises RuntimeError: if the app runs without a secret.
        """
        verifier = self.get_config(app).verifier
        if verifier is None:
            raise RuntimeError(
                "this app accepts deliveries without a secret"
                " (WEBHOOK_RECEIVER_ALLOW_NO_SECRET); set one before registering"
            )
        return verifier.newest

    def accept_session_secret(self, app: Flask, secret: str) -> None:
        """Make *app* accept *secret* too, until the process ends.

        ``flask webhooks tunnel`` registers a temporary integration with a
        fresh secret and calls this, so the app's own secret never leaves it.

        :raises RuntimeError: if the receiver is not set up on *app*.
        """
        config = self.get_config(app)
        if config.verifier is not None:
            app.extensions[EXTENSION_KEY][self.name] = dataclasses.replace(
                config, verifier=config.verifier.also_accepting(secret)
            )

    # -- handlers -------------------------------------------------------------

    def on(
        self, *events: str, name: str | None = None, latest_only: bool = False, transactional: bool = False
    ) -> Callable[[F], F]:
        """Register the decorated function as a handler of *events*.

        ::

            @receiver.on("order.paid", "order.fulfilled")
            def ship(event: Event) -> None:
                ...

        Handlers run in registration order, each in its own error handling;
        one that raises does not stop the others, and on a redelivery only
        the handlers that failed run again. The function is returned
        unchanged, so decorators can be stacked. An ``async def`` function
        runs to its end through the app's ``async_to_sync``, as an async
        view does (extra ``[async]``).

        :param events: exact names (``order.paid``) or wildcards (``order.*``,
            ``*.deleted``, ``*``). A name not in the catalogue is accepted
            with an :class:`~webhook_receiver.errors.UnknownTriggerWarning`.
        :param name: the name outcomes are recorded under; ``module.qualname``
            of the function by default. It must stay the same across deploys
            for redeliveries to skip what already succeeded.
        :param latest_only: upstream delivers out of order: skip an event
            whose resource (``event.data``, by ``type`` and ``id``) is older,
            by :attr:`Event.updated_at`, than one this handler already
            took. The resource's watermark is taken before the handler runs,
            in one compare-and-set; an older event already running when a
            newer one arrives still runs (see the handlers page of the docs).
            The skip is recorded as the handler's outcome, with the reason;
            events without a timestamp always run.
        :param transactional: exactly once in effect: the handler writes to
            the store's database (``db.session`` with
            ``SQLAlchemyStore(db)``, or ``store.session``) without
            committing, and the receiver commits those writes and the
            handler's outcome in one transaction, after checking under a row
            lock that its lease on the event is still current; a stale lease
            or an exception rolls the writes back. Needs a store that can
            (:class:`~webhook_receiver.stores.sqlalchemy.SQLAlchemyStore`):
            ``init_app`` refuses any other.
        :raises ValueError: if no event is given, one is malformed, or the
            name is taken.
        :raises TypeError: if the function cannot take the event, or is
            ``async def`` and asgiref (extra ``[async]``) is not installed.
        """
        if not events:
            raise ValueError("give at least one event name, such as 'order.paid', or '*'")
        for pattern in events:
            check_pattern(pattern)

        def decorator(fn: F) -> F:
            if transactional:  # registered after init_app: the stores already chosen must be able to
                for store in list(self._stores):
                    _check_transactional([name or callable_name(fn)], store)
            self._handlers.add(fn, events, name=name, latest_only=latest_only, transactional=transactional)
            return fn

        return decorator

    def signal(self, trigger: str) -> TriggerSignal:
        """The blinker signal sent for each event with this exact *trigger*.

        Its receivers are handlers too: called as ``fn(sender, event=event)``
        with the app as sender, after the :meth:`on` handlers, each in its own
        error handling and with its outcome recorded; an ``async def``
        receiver runs as an :meth:`on` handler does. Connect functions
        defined inside another function with ``weak=False``.

        :param trigger: an exact event name, such as ``"order.paid"``.
        :raises ValueError: if *trigger* is a wildcard or not an event name.
        """
        if not isinstance(trigger, str) or not is_event_name(trigger):
            raise ValueError(
                f"{trigger!r} is not an exact event name; signals exist per trigger"
                " (use receiver.on('order.*') for wildcards)"
            )
        with self._signals_lock:
            found = self._signals.get(trigger)
            if found is None:
                check_pattern(trigger)
                found = self._signals[trigger] = TriggerSignal(trigger)
        return found

    def handlers_for(self, trigger: str, app: Any = None) -> list[Handler]:
        """Every handler that runs for *trigger*, in order.

        :param trigger: an exact event name.
        :param app: the sender whose signal receivers count (the app).
        """
        handlers = list(self._handlers.for_trigger(trigger))
        signal = self._signals.get(trigger)
        if signal is not None:
            handlers.extend(signal_handlers(signal, app, handlers))
        return handlers

    def observes(self) -> list[str]:
        """The sorted observable events this receiver's handlers cover.

        Wildcards are expanded against the catalogue
        (:data:`~webhook_receiver.catalogue.OBSERVABLE_EVENTS`); exact names
        are kept even when the catalogue does not know them (they were warned
        about when registered). Trigger signals with receivers count too.
        """
        names: set[str] = set()
        for handler in self._handlers:
            for pattern in handler.patterns:
                names.update(expand(pattern))
        with self._signals_lock:
            names.update(trigger for trigger, signal in self._signals.items() if signal.receivers)
        return sorted(names)

    @property
    def handlers(self) -> list[Handler]:
        """The handlers registered with :meth:`on`, in registration order."""
        return list(self._handlers)


def _check_transactional(names: list[str], store: EventStore) -> None:
    """Refuse transactional handlers with a store that cannot commit their writes with their outcome."""
    if names and not store.transactional:
        raise RuntimeError(
            f"handlers {', '.join(names)} are transactional, and the {store.name} store cannot commit a"
            " handler's writes with its outcome: use SQLAlchemyStore(db) (extra [sqlalchemy]) or drop"
            " transactional=True"
        )
