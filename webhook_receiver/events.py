"""The :class:`Event` model: one Moltin delivery, parsed, checked and redacted.

Upstream has sent the same event in several shapes over the years; all of them
parse into the same :class:`Event`:

* ``resources`` as a JSON-encoded *string* ``{"data": .., "included": ..}``
  (created and updated events, the deprecated form);
* ``resources`` as a plain object ``{"id": .., "type": ..}`` (deleted events);
* ``payload``, the newer object form of the same content;
* the newest bodies, which may carry ``store_id`` / ``org_id`` and omit
  ``attempt`` and ``resources``: only ``id`` and ``triggered_by`` are certain;
* the CloudEvents the queue integrations (``stomp``, ``aws_sqs``) send
  (:meth:`Event.from_cloudevent`; their fields are read by
  :mod:`webhook_receiver.cloudevents`).

The body echoes the integration's ``configuration.secret_key``. Every value
under a key named in :data:`SECRET_FIELDS` is replaced by :data:`REDACTED`
before anything else sees the body, including inside the ``resources`` string.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from . import cloudevents, fastjson
from .catalogue import OBSERVABLE_EVENTS, is_event_name
from .errors import InvalidEvent
from .untrusted import UNSAFE

__all__ = ["Event", "OBSERVABLE_EVENTS", "REDACTED", "SECRET_FIELDS", "redact"]

#: Keys whose values never leave the parser, matched in any case by Unicode's case
#: folding (``Secret_Key``, ``PAẞWORD`` and ``ſecret_key`` too);
#: ``aws_secret_access_key`` is in the configuration of SQS integrations.
SECRET_FIELDS: frozenset[str] = frozenset({"secret_key", "client_secret", "password", "aws_secret_access_key"})

#: What a redacted value is replaced with.
REDACTED = "[redacted]"

_DIGITS = re.compile(r"[0-9]{1,9}\Z")

#: The longest event id accepted; upstream sends UUIDs.
MAX_ID_LENGTH = 200


def redact(value: Any) -> tuple[Any, bool]:
    """Return a copy of *value* with every secret field replaced by :data:`REDACTED`.

    :param value: decoded JSON (dicts, lists and scalars).
    :returns: the redacted copy and whether anything was redacted.
    """
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            if item is not None and isinstance(key, str) and key.casefold() in SECRET_FIELDS:
                out[key] = REDACTED
                changed = True
            else:
                out[key], sub_changed = redact(item)
                changed = changed or sub_changed
        return out, changed
    if isinstance(value, list):
        items = [redact(item) for item in value]
        return [item for item, _ in items], any(changed for _, changed in items)
    return value, False


@dataclass(frozen=True)
class Event:
    """One verified Moltin delivery.

    Handlers receive an :class:`Event`; build one from a body with
    :meth:`from_json` or :meth:`from_dict`.
    """

    #: The event's id: unique per event, the same on every retry.
    id: str
    #: The observable event name, such as ``"order.paid"``.
    trigger: str
    #: Which delivery attempt this is, from 1 (1 when upstream omits it).
    attempt: int = 1
    #: The integration that delivered it: ``id``, ``integration_type``, ``name``, ...
    #: (as sent, when it is not an object: see :attr:`irregular`).
    integration: Any = field(default_factory=dict)
    #: The ``payload`` object as sent (newer bodies), or ``None``.
    payload: Any = None
    #: The deprecated ``resources``, decoded from its JSON string, or ``None``
    #: (as sent, or as decoded, when it is not an object: see :attr:`irregular`).
    #: When a ``payload`` object carries the data and the string holds no secret
    #: field name, the string is decoded on first read of this attribute (or of
    #: :attr:`irregular`), not while the request is answered.
    resources: Any = None
    #: The affected resource: the ``data`` object of a created or updated
    #: event, the ``{"id", "type"}`` object of a deleted one, or ``None``.
    data: Any = None
    #: Related resources sent beside ``data`` (``included``), or ``None``.
    included: Any = None
    #: The store the event comes from, when upstream says.
    store_id: Any = None
    #: The organisation the store belongs to, when upstream says.
    org_id: Any = None
    #: Where upstream says the event comes from: a CloudEvent's ``source``, else ``None``.
    source: Any = None
    #: How the event came in: ``"webhook"``, or the queue's transport (``"stomp"``, ``"sqs"``).
    transport: str = "webhook"
    #: The whole body as a dict, with every secret redacted.
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: The fields whose shape was unexpected (``attempt``, ``resources``,
    #: ``payload``, ``integration``, ``store_id``, ``org_id``): they are kept
    #: as sent, in :attr:`raw` and in their attribute, rather than refused,
    #: because a refusal makes upstream retry until it gives up.
    irregular: tuple[str, ...] = field(default=(), repr=False, compare=False)
    #: :attr:`raw` as JSON, when the parser already has it (see :attr:`raw_json`).
    _raw_json: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def raw_json(self) -> bytes:
        """:attr:`raw` as UTF-8 JSON, as stores keep it.

        For a body whose only secret was the ``configuration`` echo, this is
        the body as sent with the echoed secret's text replaced, so that
        storing an event does not encode it again; otherwise :attr:`raw`
        encoded.
        """
        if self._raw_json is None:
            object.__setattr__(self, "_raw_json", fastjson.dumps_bytes(self.raw))
        assert self._raw_json is not None
        return self._raw_json

    @property
    def includes_elided(self) -> bool:
        """Whether upstream left the included resources out of an oversized queue message.

        SQS takes at most 256 KiB; upstream then sends ``"included": {"meta":
        {"includes_elided": true}}`` instead, and a handler that needs them
        fetches them from the API.
        """
        return cloudevents.includes_elided(self.included)

    @property
    def is_deleted(self) -> bool:
        """Whether the event reports a deletion (``data`` is then ``{"id", "type"}``)."""
        return self.trigger.endswith(".deleted")

    @property
    def updated_at(self) -> datetime | None:
        """When the resource was last updated, from its ``meta.timestamps.updated_at``, or ``None``.

        Upstream delivers out of order; ``@receiver.on(..., latest_only=True)``
        uses this to skip an event older than one a handler already handled.
        Deleted events carry no timestamp.
        """
        data = self.data
        if not isinstance(data, Mapping):
            return None
        meta = data.get("meta")
        timestamps = meta.get("timestamps") if isinstance(meta, Mapping) else None
        value = timestamps.get("updated_at") if isinstance(timestamps, Mapping) else None
        if not isinstance(value, str):
            return None
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)

    @property
    def entity(self) -> str:
        """The part of the trigger before the last dot: ``"order"`` for ``order.paid``."""
        return self.trigger.rpartition(".")[0] or self.trigger

    @property
    def action(self) -> str:
        """The part of the trigger after the last dot: ``"paid"`` for ``order.paid``."""
        return self.trigger.rpartition(".")[2]

    @classmethod
    def from_json(cls, body: bytes | str, *, trigger: str | None = None) -> Event:
        """Parse a delivery body.

        :param body: the raw body; bytes may be UTF-8, UTF-16 or UTF-32, as
            JSON allows, whatever the Content-Type said.
        :param trigger: the ``X-MOLTIN-INTEGRATION-TRIGGER`` header, which
            must then agree with the body's ``triggered_by``.
        :raises InvalidEvent: if the body is not a Moltin event.
        """
        try:
            decoded, clean, as_json = _loads_redacted(body)
        except UnicodeDecodeError:
            raise InvalidEvent("the body is not UTF-8 text") from None
        except ValueError as exc:
            raise InvalidEvent(f"the body is not valid JSON ({_json_error(exc)})") from None
        except RecursionError:
            raise InvalidEvent("the body is nested too deeply") from None
        if not isinstance(decoded, dict):
            raise InvalidEvent(f"the body must be a JSON object, not {_json_type(decoded)}")
        # A scan of the whole body covers the resources string inside it: its keys are there too, escaped.
        return cls._build(decoded, trigger, resources_clean=clean, raw_json=as_json)

    @classmethod
    def from_dict(cls, body: Mapping[str, Any], *, trigger: str | None = None) -> Event:
        """Build an event from a decoded body.

        :param body: the decoded JSON object; it is not modified.
        :param trigger: the trigger header, checked against ``triggered_by``
            when given.
        :raises InvalidEvent: if a required field is missing or a field has
            the wrong type.
        """
        try:
            raw, _ = redact(dict(body))
        except RecursionError:
            raise InvalidEvent("the body is nested too deeply") from None
        return cls._build(raw, trigger)

    @classmethod
    def from_stored(cls, raw: Mapping[str, Any]) -> Event:
        """Rebuild an event from the body a store kept, which is redacted already.

        Unlike :meth:`from_dict` it walks no nested value, so whatever the
        endpoint accepted can be rebuilt, however deeply nested.

        :param raw: the stored body.
        :raises InvalidEvent: if it is not an event body.
        """
        if not isinstance(raw, Mapping):
            raise InvalidEvent(f"the stored body is {_json_type(raw)}, not an object")
        if cloudevents.is_cloudevent(raw):
            transport = raw.get(cloudevents.TRANSPORT_ATTRIBUTE)
            return cls._build_cloudevent(dict(raw), transport if isinstance(transport, str) else None)
        return cls._build(dict(raw), None)

    @classmethod
    def from_cloudevent(
        cls,
        body: bytes | bytearray | memoryview | str | Mapping[str, Any],
        *,
        transport: str | None = None,
        attempt: int = 1,
    ) -> Event:
        """Build an event from an Elastic Path CloudEvent, as the queue integrations send.

        The same event as a webhook's: :attr:`trigger` is the CloudEvent's
        ``type``, :attr:`data` its ``data`` (the resource itself),
        :attr:`included` its ``included``, :attr:`store_id` its ``storeid``,
        :attr:`integration` ``{"id": integrationid, "integration_type": ...}``,
        :attr:`source` its ``source``. Secrets are redacted as in a webhook's
        body; unexpected fields are kept and listed in :attr:`irregular`.

        :param body: the message body (UTF-8 JSON, bytes-like or text), or the decoded object.
        :param transport: the transport it came through (``"stomp"``,
            ``"sqs"``): :attr:`transport`, and kept in :attr:`raw` as the
            extension attribute ``receivedvia`` so that stores show it.
        :param attempt: how many times the queue delivered the message, when it says.
        :raises InvalidEvent: if it is not an Elastic Path CloudEvent (not a
            JSON object, no ``id`` or ``type``, ``type`` is not an event name,
            or it has a webhook body's ``triggered_by``, which would make it
            read back from the store as a webhook's).
        """
        raw_json: bytes | None = None
        if isinstance(body, (bytearray, memoryview)):  # bytes-like, as some clients hand bodies over
            body = bytes(body)
        if not isinstance(body, (bytes, str)):  # a decoded object (the ABC check only here: it is slow)
            if not isinstance(body, Mapping):
                raise InvalidEvent(f"the message must be a JSON object, not {_json_type(body)}")
            try:
                decoded: Any = redact(dict(body))[0]
            except RecursionError:
                raise InvalidEvent("the message is nested too deeply") from None
            clean = False
        else:
            try:
                decoded, clean, raw_json = _loads_redacted(body)
            except UnicodeDecodeError:
                raise InvalidEvent("the message is not UTF-8 text") from None
            except ValueError as exc:
                raise InvalidEvent(f"the message is not valid JSON ({_json_error(exc)})") from None
            except RecursionError:
                raise InvalidEvent("the message is nested too deeply") from None
        if not isinstance(decoded, dict):
            raise InvalidEvent(f"the message must be a JSON object, not {_json_type(decoded)}")
        if "triggered_by" in decoded:  # from_stored would read it back as a webhook's body, with other handlers
            raise InvalidEvent("the message has a triggered_by member, which only a webhook's body has")
        if not clean and isinstance(decoded.get("data"), str):  # odd (upstream sends the resource), maybe JSON
            _json_inside(decoded, "data", decoded["data"])  # with a secret in it: redacted inside, as resources
        if transport is not None and decoded.get(cloudevents.TRANSPORT_ATTRIBUTE) != transport:
            raw_json = _with_transport(raw_json, decoded, transport)
            decoded[cloudevents.TRANSPORT_ATTRIBUTE] = transport
        return cls._build_cloudevent(decoded, transport, attempt=attempt, raw_json=raw_json)

    @classmethod
    def _build_cloudevent(
        cls, raw: dict[str, Any], transport: str | None, *, attempt: int = 1, raw_json: bytes | None = None
    ) -> Event:
        """Check the fields of a redacted CloudEvent, which becomes :attr:`raw`."""
        event_id = _checked_id(raw)
        fields = cloudevents.read_fields(raw, transport or "")
        event = object.__new__(cls)  # as in _build: the fields set at once, not one object.__setattr__ each
        event.__dict__.update(
            id=event_id,
            trigger=fields.trigger,
            attempt=attempt if attempt >= 1 else 1,
            integration=fields.integration,
            data=fields.data,
            included=fields.included,
            store_id=fields.store_id,
            source=fields.source,
            transport=transport or "queue",
            raw=raw,
            irregular=fields.irregular,
            resources=None,
            _raw_json=raw_json,
        )
        return event

    @classmethod
    def _build(
        cls, raw: dict[str, Any], trigger: str | None, *, resources_clean: bool = False, raw_json: bytes | None = None
    ) -> Event:
        """Check the fields of a redacted body, which becomes :attr:`raw`.

        :param resources_clean: the ``resources`` string is known to hold no
            secret field (a scan of the body it came in found none).
        :param raw_json: *raw* as JSON, when known.
        """
        event_id = _checked_id(raw)
        triggered_by = _required_str(raw, "triggered_by")
        if not is_event_name(triggered_by):
            raise InvalidEvent("triggered_by is not an event name", field="triggered_by")
        if trigger is not None and trigger != triggered_by:
            raise InvalidEvent(
                f"the X-MOLTIN-INTEGRATION-TRIGGER header {_short(trigger)} does not"
                f" match triggered_by {_short(triggered_by)}",
                field="triggered_by",
            )
        irregular: list[str] = []
        # With a payload, data comes from it: a resources string known to hold no secret field is decoded
        # only when read (the body kept in raw is as sent either way).
        deferred = resources_clean and isinstance(raw.get("resources"), str) and isinstance(raw.get("payload"), dict)
        resources = None if deferred else _resources(raw, irregular, clean=resources_clean)
        if not resources_clean and isinstance(raw.get("payload"), str):  # odd, and it may be JSON with a secret
            _json_inside(raw, "payload", raw["payload"])
        payload = _as_sent(raw, "payload", dict, irregular)
        integration = _as_sent(raw, "integration", dict, irregular)
        if isinstance(payload, dict):
            source: Any = payload
        else:
            source = resources if isinstance(resources, dict) else None
        data: Any = None
        included: Any = None
        if source is not None:
            data = source["data"] if "data" in source else source
            included = source.get("included")
        attempt = _attempt(raw, irregular)
        store_id = _as_sent(raw, "store_id", str, irregular)
        org_id = _as_sent(raw, "org_id", str, irregular)
        # Built without the frozen dataclass's __init__ (one object.__setattr__ per field): the same fields,
        # set at once.
        event = object.__new__(cls)
        fields = event.__dict__
        fields.update(
            id=event_id,
            trigger=triggered_by,
            attempt=attempt,
            integration={} if integration is None else integration,
            payload=payload,
            data=data,
            included=included,
            store_id=store_id,
            org_id=org_id,
            raw=raw,
            _raw_json=raw_json,
        )
        if deferred:
            fields["_eager_irregular"] = tuple(irregular)
        else:
            fields["resources"] = resources
            fields["irregular"] = tuple(irregular)
        return event


class _Deferred:
    """The default of :attr:`Event.resources` and :attr:`Event.irregular`, for an event whose resources string
    is decoded on first read (a non-data descriptor: once set, the instance's own value is read)."""

    def __init__(self, name: str, default: Any) -> None:
        self.name = name
        self.default = default

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self.default
        fields = instance.__dict__
        eager = fields.get("_eager_irregular")
        if eager is None:  # built by __init__ without the field, or decoded meanwhile by another thread
            return fields.get(self.name, self.default)
        irregular = list(eager)
        fields["resources"] = _resources(dict(instance.raw), irregular, clean=True)
        fields["irregular"] = tuple(irregular)
        fields.pop("_eager_irregular", None)  # another thread reading it at once may have done the same
        return fields[self.name]


def irregular_so_far(event: Event) -> tuple[str, ...]:
    """The fields of *event*'s body known to be of an unexpected shape, without decoding a deferred ``resources``.

    With a ``payload`` object beside a ``resources`` string holding no secret,
    the string is decoded only when :attr:`Event.resources` is read: until
    then it is not checked (the body keeps it as sent), and every other
    field is.
    """
    fields = event.__dict__
    eager = fields.get("_eager_irregular")  # first: a decode sets irregular before it drops this
    if eager is not None:
        return tuple(eager)
    return tuple(fields.get("irregular", ()))


Event.resources = _Deferred("resources", None)
Event.irregular = _Deferred("irregular", ())  # type: ignore[assignment]


def _resources(raw: dict[str, Any], irregular: list[str], *, clean: bool = False) -> Any:
    """Decode ``resources``; redact inside it and keep the redacted string in *raw*.

    With *clean*, the string is known to hold no secret field and is decoded
    without a scan of its own.

    What is not a JSON string of an object is kept as sent (or as decoded)
    and noted in *irregular*; a string that does not decode and may hold a
    secret is replaced by :data:`REDACTED`, since it cannot be redacted inside.
    """
    value = raw.get("resources")
    if value is None or isinstance(value, dict):
        return value
    if not isinstance(value, str):
        irregular.append("resources")
        return value
    decoded = _json_inside(raw, "resources", value, clean=clean)
    if decoded is _UNREADABLE:
        irregular.append("resources")
        return raw["resources"]
    if not isinstance(decoded, dict):
        irregular.append("resources")
    return decoded


#: What :func:`_json_inside` returns for a string that is not JSON.
_UNREADABLE: Any = object()


def _json_inside(raw: dict[str, Any], name: str, value: str, *, clean: bool = False) -> Any:
    """Decode the JSON inside the string *value* of ``raw[name]``, redacting it there when it may hold a secret.

    The redacted text replaces the string in *raw*; a string that may hold a
    secret and does not decode becomes :data:`REDACTED` (it cannot be redacted
    inside). :returns: the decoded value, or :data:`_UNREADABLE`.
    """
    secretive = not clean and _stems(value) != 0
    try:
        decoded = json.loads(value, object_hook=_redact_object) if secretive else fastjson.loads(value)
    except (ValueError, RecursionError):
        if secretive:
            raw[name] = REDACTED
        return _UNREADABLE
    if secretive:
        raw[name] = fastjson.dumps(decoded)
    return decoded


def _as_sent(raw: Mapping[str, Any], name: str, kind: type, irregular: list[str]) -> Any:
    """The field *name* as sent; noted in *irregular* when it is not ``None`` nor of *kind*."""
    value = raw.get(name)
    if value is not None and not isinstance(value, kind):
        irregular.append(name)
    return value


def _redact_object(obj: dict[str, Any]) -> dict[str, Any]:
    """``object_hook`` of the parser: redact the secret fields of one decoded object."""
    for key, value in obj.items():
        if value is not None and key.casefold() in SECRET_FIELDS:
            obj[key] = REDACTED
    return obj


#: Every name in :data:`SECRET_FIELDS` holds one of these.
_STEMS = ("secret", "password")
_BYTE_STEMS = (b"secret", b"password")
assert all(any(stem in name for stem in _STEMS) for name in SECRET_FIELDS)
#: A ``\\u`` escape, with which a key may be spelled (a search for a literal, faster than ``in`` here).
_ESCAPE_BYTES = re.compile(rb"\\u")
_ESCAPE_TEXT = re.compile(r"\\u")
#: The letters outside ASCII whose case folding spells a stem's letters (sharp s and long s fold to ``ss`` and
#: ``s``), in text and in UTF-8; looked for only in a body that is not all ASCII.
_FOLDS = "\u00df\u017f\u1e9e"
_FOLDS_TEXT = re.compile(f"[{_FOLDS}]")
_FOLDS_BYTES = re.compile(b"|".join(fold.encode() for fold in _FOLDS))
assert all(fold.casefold().isascii() for fold in _FOLDS)


def _stems(text: str | bytes) -> int | None:
    """How often the stems of the secret field names occur in *text*, in any case; ``None`` when it cannot tell.

    They are counted wherever they are: in a key, in a value, or in a JSON
    string inside a value (the keys of the ``resources`` string are in the
    body, escaped). Escaped text can spell a stem that no search finds, and
    so can a letter whose case folding is ASCII (``ß``, ``ſ``).
    """
    if isinstance(text, bytes):
        if _ESCAPE_BYTES.search(text) or b"\x00" in text:  # a zero byte: UTF-16/32 text
            return None
        if not text.isascii() and _FOLDS_BYTES.search(text):
            return None
        lowered = text.lower()
        return lowered.count(_BYTE_STEMS[0]) + lowered.count(_BYTE_STEMS[1])
    if _ESCAPE_TEXT.search(text) or (not text.isascii() and _FOLDS_TEXT.search(text)):
        return None
    lowered_text = text.lower()
    return lowered_text.count(_STEMS[0]) + lowered_text.count(_STEMS[1])


def _redact_echo(decoded: Any) -> tuple[int, Any]:
    """Redact the ``configuration.secret_key`` echo, so spelled, in place.

    :returns: the stems its key and value hold, and the value it had.
    """
    configuration = decoded.get("configuration") if isinstance(decoded, dict) else None
    if not isinstance(configuration, dict) or "secret_key" not in configuration:
        return 0, None
    value = configuration["secret_key"]
    if value is None:
        return 1, None
    configuration["secret_key"] = REDACTED
    return (1 + (_stems(value) or 0) if isinstance(value, str) else 1), value


_ECHO_KEY = b'"secret_key"'
_REDACTED_JSON = fastjson.dumps_bytes(REDACTED)
_BLANKS = b" \t\r\n"


def _splice_echo(text: bytes, secret: Any) -> bytes | None:
    """*text* with the echoed *secret* replaced by :data:`REDACTED`, or ``None`` when it is not spelled as expected.

    Called only when the echo's key is the one ``"secret_key"`` in *text* and
    no escape sequence is in it: the secret is then the value right after
    that key, spelled as :mod:`orjson` would spell it, or the caller encodes
    the redacted body instead.
    """
    end = len(text)
    i = text.find(_ECHO_KEY) + len(_ECHO_KEY)
    while i < end and text[i] in _BLANKS:
        i += 1
    if i >= end or text[i] != 0x3A:  # ':'
        return None
    i += 1
    while i < end and text[i] in _BLANKS:
        i += 1
    spelled = fastjson.dumps_bytes(secret)
    if not text.startswith(spelled, i):
        return None
    return text[:i] + _REDACTED_JSON + text[i + len(spelled) :]


def _with_transport(raw_json: bytes | None, decoded: dict[str, Any], transport: str) -> bytes | None:
    """*raw_json* with ``"receivedvia": transport`` added last, as the dict gets it; ``None`` when it cannot be.

    The common message (no ``receivedvia`` yet, a plain transport name) is
    written by adding the member before the closing brace, rather than
    encoding the whole body again.
    """
    if raw_json is None or not decoded or cloudevents.TRANSPORT_ATTRIBUTE in decoded or not transport.isalnum():
        return None
    text = raw_json.rstrip()
    if not text.endswith(b"}"):
        return None
    return b'%s,"%s":"%s"}' % (text[:-1], cloudevents.TRANSPORT_ATTRIBUTE.encode(), transport.encode())


#: A byte order mark, as text and as UTF-8 (:func:`_loads_redacted` drops one that starts a body).
_BOM = "\ufeff"
_BOM_BYTES = _BOM.encode()


def _loads_redacted(text: str | bytes) -> tuple[Any, bool, bytes | None]:
    """Decode JSON, redacting every secret field; and whether the text held none but the echo.

    The thorough path redacts each object as the parser builds it (a Python
    call per object). A count of the secret names' stems (:func:`_stems`)
    lets most bodies skip it: those that hold none, and those whose only
    ones are in the ``configuration`` echo (its key and the secret itself),
    which is then redacted in place. A stem anywhere else, in a key or a
    value, sends the text to the thorough path.

    A leading byte order mark is dropped first: :mod:`json` reads past one
    in bytes, so the event would be taken, and the body kept with it would
    not read back as JSON from the store.

    :returns: the redacted value; ``True`` when no secret field was found
        beyond the echo, in the text or in any JSON string inside it; and
        the redacted value as JSON bytes when they come cheaply from *text*.
    """
    if isinstance(text, bytes):
        if text[:3] == _BOM_BYTES:
            text = text[3:]
    elif text[:1] == _BOM:
        text = text[1:]
    stems = _stems(text)
    if stems is not None:
        decoded, exact = fastjson.loads_exact(text)
        # What orjson refused and json read (a NaN, a number past 64 bits) is kept as sent, as json reads it
        # back, unless it is not UTF-8 (a surrogate spelled in it), which no store decodes: then it is encoded.
        as_sent = text if isinstance(text, bytes) and (exact or _is_utf8(text)) else None
        if stems == 0:
            return decoded, True, as_sent
        echo_stems, secret = _redact_echo(decoded)
        if echo_stems == stems:
            as_json = _splice_echo(as_sent, secret) if as_sent is not None and isinstance(secret, str) else None
            return decoded, True, as_json
    return json.loads(text, object_hook=_redact_object), False, None


def _is_utf8(text: bytes) -> bool:
    try:
        text.decode()
    except UnicodeDecodeError:
        return False
    return True


def _checked_id(raw: Mapping[str, Any]) -> str:
    """The body's ``id``: a non-empty string, not too long, that no log line or store trips on."""
    event_id = _required_str(raw, "id")
    if len(event_id) > MAX_ID_LENGTH:
        raise InvalidEvent(f"id is longer than {MAX_ID_LENGTH} characters", field="id")
    if UNSAFE.search(event_id):  # control characters forge log lines; no store encodes a surrogate
        raise InvalidEvent("id holds a control character or an unpaired surrogate", field="id")
    return event_id


def _required_str(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name)
    if value is None:
        raise InvalidEvent(f"the body has no {name}", field=name)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{name} must be a non-empty string", field=name)
    return value


def _attempt(raw: Mapping[str, Any], irregular: list[str]) -> int:
    """The delivery attempt: a positive integer, or a string of one (as an older upstream sends); else 1."""
    value = raw.get("attempt")
    if value is None:
        return 1
    if isinstance(value, str) and _DIGITS.match(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    irregular.append("attempt")
    return 1


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return "undecodable text"


def _short(value: str, limit: int = 64) -> str:
    """Quote an untrusted value for an error message, cut to *limit* characters."""
    if len(value) > limit:
        value = value[:limit] + "..."
    return json.dumps(value)
