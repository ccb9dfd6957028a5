"""Making the store's webhook integrations match the code, in one call.

Upstream lets one integration observe five events at most, so a receiver's
events are spread over a *group* of integrations named from one name:
``<name>``, ``<name>-2``, ``<name>-3``, ... :func:`sync_integration` finds the
group (by name, else the one integration delivering to the URL), keeps each
event in the integration that already observes it, adds new events where
there is room and creates members for the rest, removes events no handler
covers, and deletes its own members that become empty. Writes that free room
go first. A second run makes no write call, and it never creates a duplicate.

Two syncs of one group at once (two deploys, two terminals) take turns: each
holds an advisory lock upstream while it reads and writes, a disabled marker
integration named ``<name>.sync-lock`` (see :func:`sync_lock`). A new member
never takes a name another integration already has.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..catalogue import unknown_events
from ..errors import MoltinAPIError, SyncError
from ..events import REDACTED, redact
from ..receiver import WebhookReceiver
from .client import MoltinClient

__all__ = [
    "MAX_EVENTS_PER_INTEGRATION",
    "MAX_INTEGRATIONS",
    "LOCK_MARK",
    "LOCK_URL",
    "IntegrationChange",
    "SyncError",
    "SyncResult",
    "default_integration_name",
    "group_members",
    "is_sync_lock",
    "Target",
    "sync_integration",
    "sync_lock",
    "sync_target",
    "webhook_target",
]

#: Upstream's quota of events one integration observes.
MAX_EVENTS_PER_INTEGRATION = 5
#: Upstream's quota of integrations per store.
MAX_INTEGRATIONS = 100
#: What the description of an integration sync manages starts with.
MANAGED_MARK = "Managed by webhook_receiver"
#: What the description of a sync's lock marker starts with.
LOCK_MARK = "webhook_receiver sync lock"
#: A lock marker older than this (seconds) is a sync that died: it is deleted.
LOCK_STALE_SECONDS = 120.0
#: How long a sync waits for another one of the same group to finish (seconds): longer than
#: :data:`LOCK_STALE_SECONDS`, so that the marker of a sync killed just before is outlived and
#: deleted rather than waited for in vain.
LOCK_WAIT_SECONDS = LOCK_STALE_SECONDS + 30.0


@dataclass(frozen=True)
class IntegrationChange:
    """What sync did, or would do, to one integration of the group.

    :param action: ``"created"``, ``"updated"``, ``"unchanged"`` or ``"deleted"``.
    :param name: the integration's name.
    :param integration: the integration as upstream now has it (or would), its
        secret redacted; ``None`` for a dry-run creation or a deletion.
    :param changes: each changed field with its ``(old, new)`` values; the
        secret appears as ``"[redacted]"``.
    """

    action: str
    name: str
    integration: dict[str, Any] | None
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self, dry_run: bool) -> list[str]:
        verb = {"created": "create", "updated": "update", "unchanged": "leave", "deleted": "delete"}[self.action]
        what = f"would {verb}" if dry_run else self.action
        ident = f" ({self.integration['id']})" if self.integration and self.integration.get("id") else ""
        lines = [f"{what} integration {self.name!r}{ident}"]
        for key, (old, new) in self.changes.items():
            lines.append(f"  {key}: {_show(old)} -> {_show(new)}")
        return lines


@dataclass(frozen=True)
class SyncResult:
    """What :func:`sync_integration` did, or would do with ``dry_run``, to each integration of the group.

    :param steps: one :class:`IntegrationChange` per integration, in group order.
    :param dry_run: whether nothing was written.
    """

    steps: list[IntegrationChange]
    dry_run: bool = False

    @property
    def action(self) -> str:
        """``"unchanged"`` when nothing changed, ``"created"`` when every step created, else ``"updated"``."""
        actions = {step.action for step in self.steps}
        if actions == {"unchanged"}:
            return "unchanged"
        if actions == {"created"}:
            return "created"
        return "updated"

    @property
    def integration(self) -> dict[str, Any] | None:
        """The group's first integration (the one named ``<name>``)."""
        kept = [step for step in self.steps if step.action != "deleted"]
        return kept[0].integration if kept else None

    @property
    def integrations(self) -> list[dict[str, Any] | None]:
        """Every integration the group keeps, in order."""
        return [step.integration for step in self.steps if step.action != "deleted"]

    @property
    def changes(self) -> dict[str, tuple[Any, Any]]:
        """The changes of the first integration."""
        return self.steps[0].changes if self.steps else {}

    def lines(self) -> list[str]:
        """What was done (or would be), a line per integration and per changed field."""
        return [line for step in self.steps for line in step.describe(self.dry_run)]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "(none)"
    return "(none)" if value is None else str(value)


def default_integration_name(receiver: WebhookReceiver) -> str:
    """The name sync gives a receiver's integration: ``webhook_receiver-<name>``."""
    return f"webhook_receiver-{receiver.name}"


def secret_fingerprint(secret: str, key: bytes = b"") -> str:
    """A short, one-way fingerprint of a secret, to tell whether upstream holds the same one.

    Used when upstream does not return the secrets of an integration's
    configuration. It is published in the integration's description, so it
    is keyed (:meth:`MoltinClient.fingerprint_key`): a guess of the secret
    cannot be checked against it without the key.

    :param key: at most 64 bytes.
    """
    return hashlib.blake2b(secret.encode("utf-8"), digest_size=4, key=key, person=b"whr-secret-fp").hexdigest()


def group_members(
    integrations: list[dict[str, Any]], name: str, integration_type: str | None = "webhook"
) -> list[dict[str, Any]]:
    """The integrations of the group named *name*: ``<name>`` and ``<name>-N``, in order.

    ``<name>-N`` members count only when sync manages them (their description
    says so): an integration a person named ``shop-2`` is not taken.

    :param integration_type: the type of the group's integrations (``webhook``,
        ``stomp``, ``aws_sqs``); ``None`` takes any.
    """
    numbered = re.compile(re.escape(name) + r"-([2-9]|[1-9][0-9]+)\Z")
    members: list[tuple[int, dict[str, Any]]] = []
    for integration in integrations:
        if integration_type is not None and integration.get("integration_type") != integration_type:
            continue
        own = str(integration.get("description") or "").startswith(MANAGED_MARK)
        found = numbered.match(str(integration.get("name") or ""))
        if integration.get("name") == name:
            members.append((1, integration))
        elif found and own:
            members.append((int(found.group(1)), integration))
    return [integration for _, integration in sorted(members, key=lambda m: m[0])]


def is_sync_lock(integration: dict[str, Any], name: str | None = None) -> bool:
    """Whether *integration* is the lock marker of a running sync (of the group *name*, when given)."""
    if not str(integration.get("description") or "").startswith(LOCK_MARK):
        return False
    return name is None or integration.get("name") == f"{name}.sync-lock"


def _lock_taken_at(integration: dict[str, Any]) -> float:
    found = re.search(r"since ([0-9]+(?:\.[0-9]+)?)", str(integration.get("description") or ""))
    return float(found.group(1)) if found else 0.0


@contextlib.contextmanager
def sync_lock(
    client: MoltinClient, name: str, *, url: str, event: str, wait: float = LOCK_WAIT_SECONDS
) -> Iterator[None]:
    """Hold the advisory lock of the group *name* upstream, for one sync.

    Upstream has no lock, so the marker is an integration: disabled (it
    delivers nothing), named ``<name>.sync-lock``. A sync creates its marker,
    then lists the integrations: alone, it holds the lock; else it deletes its
    marker and tries again after a random pause, so that of two syncs that
    meet, at most one goes on (each lists after its own create, so the later
    one always sees the earlier marker). A marker older than
    :data:`LOCK_STALE_SECONDS` is a sync that died, and is deleted. The marker
    is deleted when the sync ends, whatever happened.

    :param url: the URL the marker names (it never delivers).
    :param event: an event upstream knows, which the marker observes (upstream
        requires one).
    :param wait: how long to wait for another sync, in seconds.
    :raises SyncError: if another sync holds the lock for longer than *wait*.
    """
    token = secrets.token_hex(6)
    deadline = time.monotonic() + wait
    pause = 0.05
    while True:
        try:
            mine = _create_marker(client, name, url, event, token)
        except MoltinAPIError as exc:
            if exc.status != 422:
                raise
            # The store is at upstream's quota: no sync can create anything, so none can
            # create a duplicate either; the updates and deletions go on unlocked.
            yield
            return

        others = [i for i in client.list_integrations() if is_sync_lock(i, name) and i.get("id") != mine.get("id")]
        live = []
        for other in others:
            if time.time() - _lock_taken_at(other) > LOCK_STALE_SECONDS:
                with contextlib.suppress(MoltinAPIError):
                    client.delete_integration(str(other["id"]))
            else:
                live.append(other)
        if not live:
            break
        client.delete_integration(str(mine["id"]))
        if time.monotonic() >= deadline:
            ids = ", ".join(str(i.get("id")) for i in live)
            raise SyncError(
                f"another sync of {name!r} is running (its lock is integration {ids}); try again when it is done,"
                f" or delete the lock if no sync runs (`flask webhooks delete {live[0].get('id')}`)"
            )
        time.sleep(pause + random.uniform(0, pause))
        pause = min(pause * 2, 1.0)
    try:
        yield
    finally:
        with contextlib.suppress(MoltinAPIError):
            client.delete_integration(str(mine["id"]))


def _create_marker(client: MoltinClient, name: str, url: str, event: str, token: str) -> dict[str, Any]:
    return client.create_integration(
        name=f"{name}.sync-lock",
        url=url,
        observes=[event],
        description=(
            f"{LOCK_MARK} {token} since {time.time():.3f}: `flask webhooks sync` is changing the group"
            f" {name!r} and deletes this when it is done (a marker older than a few minutes is left over)."
        ),
        enabled=False,
    )


@dataclass(frozen=True, repr=False)
class Target:
    """Where a group of integrations delivers: its ``integration_type`` and ``configuration``.

    :param integration_type: ``"webhook"``, ``"stomp"`` or ``"aws_sqs"``.
    :param configuration: the ``configuration`` upstream takes for that type
        (webhook: ``url``, ``secret_key``; stomp: ``username``, ``password``,
        ``destination``, ``addresses``; aws_sqs: ``url``,
        ``aws_access_key_id``, ``aws_secret_access_key``, ``region``).
    :param secrets: the keys of *configuration* never shown (``"[redacted]"``
        in every line and repr) and told apart by a fingerprint in the
        description when upstream does not return them.
    """

    integration_type: str
    configuration: dict[str, Any]
    secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        shown = {k: (REDACTED if k in self.secrets else v) for k, v in self.configuration.items()}
        return f"Target({self.integration_type!r}, {shown!r})"

    @property
    def where(self) -> str:
        """Where it delivers, for messages: the URL, or the destination and first address."""
        if self.integration_type == "stomp":
            addresses = self.configuration.get("addresses") or ["?"]
            return f"{self.configuration.get('destination')} on {addresses[0]}"
        return str(self.configuration.get("url"))

    def delivers_there(self, integration: dict[str, Any]) -> bool:
        """Whether *integration* (of this type) delivers where this target does."""
        held = integration.get("configuration") or {}
        if self.integration_type == "stomp":
            return held.get("destination") == self.configuration.get("destination") and bool(
                set(held.get("addresses") or []) & set(self.configuration.get("addresses") or [])
            )
        return bool(held.get("url") == self.configuration.get("url"))

    def fingerprint(self, key: bytes = b"") -> str:
        """A one-way fingerprint of the secrets together (of ``secret_key`` alone, for a webhook), keyed with *key*."""
        return secret_fingerprint("\0".join(str(self.configuration.get(name) or "") for name in self.secrets), key)


#: The URL a queue group's lock marker names; the marker is disabled and never delivers.
LOCK_URL = "https://sync-lock.invalid/"


def webhook_target(url: str, secret_key: str) -> Target:
    """The target of a webhook group: *url*, with *secret_key* sent back in ``X-MOLTIN-SECRET-KEY``."""
    return Target("webhook", {"url": url, "secret_key": secret_key}, ("secret_key",))


def sync_integration(
    client: MoltinClient,
    receiver: WebhookReceiver,
    url: str,
    *,
    name: str | None = None,
    secret_key: str | None = None,
    enabled: bool = True,
    dry_run: bool = False,
) -> SyncResult:
    """Make the receiver's group of webhook integrations upstream match its handlers.

    :param client: the store's API client.
    :param receiver: whose handlers decide what to observe.
    :param url: the public URL of the receiver's endpoint.
    :param name: the group's name; :func:`default_integration_name` when not given.
    :param secret_key: the secret upstream should send; the current app's
        (:meth:`WebhookReceiver.secret_key`) when not given.
    :param enabled: whether the integrations deliver.
    :param dry_run: compute the changes and write nothing.
    :raises SyncError: if the receiver has no handlers, observes events
        upstream does not know, several integrations match, or the store has
        no room for the integrations needed.
    :raises MoltinAPIError: if upstream refuses a call.
    """
    if not url.startswith(("http://", "https://")):
        raise SyncError(f"the URL must start with http:// or https://, not {url[:40]!r}")
    if secret_key is None:
        secret_key = receiver.secret_key()
    return sync_target(client, receiver, webhook_target(url, secret_key), name=name, enabled=enabled, dry_run=dry_run)


def sync_target(
    client: MoltinClient,
    receiver: WebhookReceiver,
    target: Target,
    *,
    name: str | None = None,
    enabled: bool = True,
    dry_run: bool = False,
) -> SyncResult:
    """Make the receiver's group of integrations of *target*'s type upstream match its handlers.

    The same as :func:`sync_integration`, for any integration type: five
    events per member, the group found by name (else by where it delivers),
    the same lock. Queue groups (``stomp``, ``aws_sqs``) are named
    ``<default name>-stomp`` and ``<default name>-sqs`` unless *name* is given.

    :param target: the type and configuration (see :class:`Target`;
        :mod:`webhook_receiver.upstream.targets` builds them from URLs).
    :raises SyncError: as :func:`sync_integration`.
    :raises MoltinAPIError: if upstream refuses a call.
    """
    observes = receiver.observes()
    if not observes:
        raise SyncError(f"receiver {receiver.name!r} has no handlers: there is nothing to observe")
    unknown = unknown_events(observes)
    if unknown:
        raise SyncError(
            f"upstream refuses events it does not know: {', '.join(unknown)}; rename or remove"
            " those handlers (custom API events are named '<slug>_ext.created')"
        )
    if name is None:
        suffix = {"webhook": "", "aws_sqs": "-sqs"}.get(target.integration_type, f"-{target.integration_type}")
        name = default_integration_name(receiver) + suffix
    description = (
        f"{MANAGED_MARK}: `flask webhooks sync` keeps it in step with"
        f" the app's handlers (secret {target.fingerprint(client.fingerprint_key())})."
    )

    planned = _sync(client, name, target, observes, description, enabled, dry_run=True)
    if dry_run:
        return planned
    if planned.action == "unchanged":  # nothing to write: no lock either
        return SyncResult(planned.steps, dry_run=False)
    lock_url = str(target.configuration["url"]) if target.integration_type == "webhook" else LOCK_URL
    with sync_lock(client, name, url=lock_url, event=observes[0]):
        # Read again under the lock: another sync may have written since.
        return _sync(client, name, target, observes, description, enabled, dry_run=False)


def _sync(
    client: MoltinClient,
    name: str,
    target: Target,
    observes: list[str],
    description: str,
    enabled: bool,
    dry_run: bool,
) -> SyncResult:
    """One sync, under the group's lock unless *dry_run*: read what upstream has, then write the difference."""
    integrations = [i for i in client.list_integrations() if not is_sync_lock(i)]
    kind = target.integration_type
    same_type = [i for i in integrations if i.get("integration_type") == kind]
    members = group_members(same_type, name, kind)
    if sum(1 for m in members if m.get("name") == name) > 1:
        _ambiguous([m for m in members if m.get("name") == name], f"named {name!r}", kind)
    if not members:
        there = [i for i in same_type if target.delivers_there(i)]
        if len(there) > 1:
            _ambiguous(there, f"delivering to {target.where}", kind)
        members = there

    plan = _plan(members, observes)
    creations = sum(1 for current, _ in plan if current is None)
    if (
        creations
        and len(integrations) + creations - sum(1 for c, e in plan if c is not None and not e) > MAX_INTEGRATIONS
    ):
        raise SyncError(
            f"the store would need {creations} more integration(s), past upstream's quota of"
            f" {MAX_INTEGRATIONS}; delete some (`flask webhooks list` shows them)"
        )

    taken = {str(i.get("name")) for i in integrations if i not in members}
    names = _names(plan, name, taken)
    steps: dict[int, IntegrationChange] = {}
    ordered = sorted(range(len(plan)), key=lambda n: _write_order(plan[n], observes))
    for n in ordered:
        current, events = plan[n]
        desired = {
            "name": names[n],
            "description": description,
            "enabled": enabled,
            "observes": events,
        }
        steps[n] = _apply(client, current, desired, target, dry_run)
    return SyncResult([steps[n] for n in range(len(plan))], dry_run)


def _ambiguous(matches: list[dict[str, Any]], how: str, kind: str = "webhook") -> None:
    ids = ", ".join(str(i.get("id")) for i in matches)
    raise SyncError(
        f"{len(matches)} {kind} integrations are {how} ({ids}); delete the extra ones"
        " (`flask webhooks delete ID`) and sync again"
    )


def _plan(members: list[dict[str, Any]], observes: list[str]) -> list[tuple[dict[str, Any] | None, list[str]]]:
    """Each member (or ``None`` for one to create) with the sorted events it should observe.

    An event stays where it is; new events fill the room left, in order, then
    new members; a member left with nothing is to be deleted (empty list).
    """
    wanted = set(observes)
    placed: set[str] = set()
    plan: list[tuple[dict[str, Any] | None, list[str]]] = []
    for member in members:
        keep = sorted(e for e in dict.fromkeys(member.get("observes") or []) if e in wanted and e not in placed)
        keep = keep[:MAX_EVENTS_PER_INTEGRATION]
        placed.update(keep)
        plan.append((member, keep))
    waiting = [e for e in observes if e not in placed]
    for n, (existing, events) in enumerate(plan):
        room = MAX_EVENTS_PER_INTEGRATION - len(events)
        if room > 0 and waiting and (events or n == 0):
            plan[n] = (existing, sorted(events + waiting[:room]))
            waiting = waiting[room:]
    while waiting:
        plan.append((None, sorted(waiting[:MAX_EVENTS_PER_INTEGRATION])))
        waiting = waiting[MAX_EVENTS_PER_INTEGRATION:]
    return plan


def _names(plan: list[tuple[dict[str, Any] | None, list[str]]], name: str, taken: set[str]) -> list[str]:
    """The name of each planned member: a member keeps its group name; the others take the first free one.

    :param taken: the names of the integrations outside the group (a person's
        ``<name>-2``): a new member never takes one of them.
    """
    group = re.compile(re.escape(name) + r"(-([2-9]|[1-9][0-9]+))?\Z")
    names: list[str | None] = []
    for current, events in plan:
        held = str((current or {}).get("name") or "")
        names.append(held if current is not None and (not events or group.match(held)) else None)
    used = set(names) | taken
    free = (
        candidate
        for candidate in (name if n == 1 else f"{name}-{n}" for n in range(1, 10_000))
        if candidate not in used
    )
    return [given if given is not None else next(free) for given in names]


def _write_order(step: tuple[dict[str, Any] | None, list[str]], observes: list[str]) -> int:
    """Deletions and updates that drop events first (they free room), creations last."""
    current, events = step
    if current is None:
        return 2
    if not events or set(current.get("observes") or []) - set(events):
        return 0
    return 1


def _apply(
    client: MoltinClient,
    current: dict[str, Any] | None,
    desired: dict[str, Any],
    target: Target,
    dry_run: bool,
) -> IntegrationChange:
    name, events, configuration = desired["name"], desired["observes"], target.configuration
    secrets = target.secrets
    if current is None:
        changes: dict[str, tuple[Any, Any]] = {key: (None, value) for key, value in desired.items()}
        for key, value in configuration.items():
            changes[key] = (None, REDACTED if key in secrets else value)
        created = None
        if not dry_run:
            created = client.create_integration(
                name=name,
                integration_type=target.integration_type,
                configuration=configuration,
                observes=events,
                description=desired["description"],
                enabled=desired["enabled"],
            )
        return IntegrationChange("created", name, _redacted(created, secrets), changes)
    if not events:
        if not dry_run:
            client.delete_integration(str(current["id"]))
        return IntegrationChange(
            "deleted",
            str(current.get("name")),
            _redacted(current, secrets),
            {"observes": (sorted(current.get("observes") or []), [])},
        )

    changes = {}
    update: dict[str, Any] = {}
    for key in ("name", "description", "enabled"):
        if current.get(key) != desired[key]:
            changes[key] = (current.get(key), desired[key])
            update[key] = desired[key]
    if sorted(current.get("observes") or []) != events:
        changes["observes"] = (sorted(current.get("observes") or []), events)
        update["observes"] = events
    held = current.get("configuration") or {}
    for key, value in configuration.items():
        if key not in secrets and held.get(key) != value:
            changes[key] = (held.get(key), value)
            update["configuration"] = configuration
    changed_secrets = [key for key in secrets if key in held and held[key] != configuration.get(key)]
    for key in changed_secrets:
        changes[key] = (REDACTED, REDACTED)
        update["configuration"] = configuration
    if not changed_secrets and "description" in update:
        # Upstream hides the secret: the fingerprint in the description tells.
        update["configuration"] = configuration
    if not update:
        return IntegrationChange("unchanged", name, _redacted(current, secrets), {})
    result = {**current, **update} if dry_run else client.update_integration(current["id"], **update)
    return IntegrationChange("updated", name, _redacted(result, secrets), changes)


def _redacted(integration: dict[str, Any] | None, secrets: tuple[str, ...] = ()) -> dict[str, Any] | None:
    if integration is None:
        return None
    clean, _ = redact(integration)
    clean = dict(clean)
    held = clean.get("configuration")
    if isinstance(held, dict):
        clean["configuration"] = {k: (REDACTED if k in secrets else v) for k, v in held.items()}
    return clean
