"""The exceptions and warnings the receiver raises.

Every exception carries the data a caller needs to react (a reason, a limit, a
store name) as attributes, and none of them ever holds a secret or a request
body.
"""

from __future__ import annotations

from typing import Any, Sequence


class WebhookReceiverError(Exception):
    """Base class of every error raised by :mod:`webhook_receiver`."""


class InvalidEvent(WebhookReceiverError, ValueError):
    """A delivery that cannot be understood as a Moltin event.

    Answered with ``400 Bad Request``; no handler runs and nothing is stored.

    :param reason: what is wrong, in words fit for the error body.
    :param field: the body field or header at fault, when there is one.
    """

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        #: What is wrong, safe to send back to the caller.
        self.reason = reason
        #: The body field or header at fault, or ``None``.
        self.field = field


class PayloadTooLarge(WebhookReceiverError):
    """A delivery whose body is larger than ``WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH``.

    :param limit: the configured limit in bytes.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is larger than the limit of {limit} bytes")
        #: The configured limit in bytes.
        self.limit = limit


class StoreUnavailable(WebhookReceiverError):
    """The event store cannot take or answer for an event right now.

    The receiver answers ``503`` so that upstream retries the delivery later;
    nothing is acknowledged.

    :param store: a short name of the store, such as ``"memory"``.
    :param reason: what failed, without credentials.
    """

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"the {store} event store is unavailable: {reason}")
        #: The store's short name.
        self.store = store
        #: What failed.
        self.reason = reason


class BrokerUnavailable(WebhookReceiverError):
    """The task queue (Celery's broker) cannot take an event right now.

    The receiver answers ``503``; the event stays pending in the store and
    upstream's retry enqueues it again.

    :param reason: what failed, without credentials.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"the task queue is unavailable: {reason}")
        #: What failed.
        self.reason = reason


class BacklogFull(WebhookReceiverError):
    """More events wait for a background worker than ``WEBHOOK_RECEIVER_MAX_BACKLOG``.

    The receiver answers ``503`` so that upstream retries later, when the
    workers have caught up; nothing is stored.

    :param limit: the configured limit.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} events wait for a worker")
        #: The configured limit.
        self.limit = limit


class TransportUnavailable(WebhookReceiverError):
    """A queue consumer cannot reach its broker or queue, or lost the connection to it.

    The consumer connects again with backoff; what it had not acknowledged
    the queue delivers again. The message never holds a credential.
    """


class WeakSecretWarning(UserWarning):
    """A webhook secret is short enough to be guessed; ``init_app`` says how to make a good one."""


class MoltinAPIError(WebhookReceiverError):
    """The store's API refused a call, or answered something that is not its API.

    :param message: what happened, for a person (never a credential).
    :param status: the HTTP status, or ``None`` when no answer came.
    :param errors: upstream's ``errors`` list, as sent.
    """

    def __init__(self, message: str, *, status: int | None = None, errors: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        #: The HTTP status, or ``None``.
        self.status = status
        #: Upstream's ``errors`` objects (``status``, ``title``, ``detail``, ``source``).
        self.errors = list(errors)


class MoltinConnectionError(MoltinAPIError):
    """No answer: the host is unreachable, the connection was reset, or it timed out."""


class SyncError(WebhookReceiverError):
    """The integrations cannot be synced as asked; the message says why and what to do."""


class TunnelError(WebhookReceiverError, RuntimeError):
    """The tunnel could not be opened; the message says what to install or set."""


class UnknownTriggerWarning(UserWarning):
    """A handler was registered for an event name that is not in the catalogue.

    The name is kept: stores may observe custom events (``<slug>.created``) or
    events newer than this package. The warning only helps catch typos such as
    ``order.payed``.
    """


class UnknownSettingWarning(UserWarning):
    """A ``WEBHOOK_RECEIVER_*`` key (or a key of a ``WEBHOOK_RECEIVERS`` entry) the receiver does not know.

    Most often a misspelling, which would otherwise leave the default in
    place without a word; the message names the nearest known key.
    """
