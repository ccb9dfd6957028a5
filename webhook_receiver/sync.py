"""Making the store's webhook integration match the code, in one call.

:func:`sync_integration` finds the receiver's integration (by name, else by
URL), then creates it, updates what differs, or does nothing. A second run
makes no write call, and it never creates a duplicate.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .catalogue import unknown_events
from .errors import WebhookReceiverError
from .events import REDACTED, redact
from .moltin import MoltinClient
from .receiver import WebhookReceiver

__all__ = ["SyncError", "SyncResult", "default_integration_name", "sync_integration"]

#: Upstream's quota of webhooks observing one event.
MAX_WEBHOOKS_PER_EVENT = 5


class SyncError(WebhookReceiverError):
    """The integration cannot be synced as asked; the message says why and what to do."""


@dataclass(frozen=True)
class SyncResult:
    """What :func:`sync_integration` did, or would do with ``dry_run``.

    :param action: ``"created"``, ``"updated"`` or ``"unchanged"``.
    :param integration: the integration as upstream now has it (or would,
        on a dry run), its secret redacted; ``None`` for a dry-run creation.
    :param changes: each changed field with its ``(old, new)`` values; the
        secret appears as ``"[redacted]"``.
    :param dry_run: whether nothing was written.
    """

    action: str
    integration: dict[str, Any] | None
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    dry_run: bool = False

    def __str__(self) -> str:
        verb = {"created": "create", "updated": "update", "unchanged": "leave"}[self.action]
        what = f"would {verb}" if self.dry_run else self.action
        name = (self.integration or {}).get("name") or self.changes.get("name", (None, "?"))[1]
        lines = [f"{what} integration {name!r}" + (
            f" ({self.integration['id']})" if self.integration and self.integration.get("id") else "")]
        for key, (old, new) in self.changes.items():
            lines.append(f"  {key}: {_show(old)} -> {_show(new)}")
        return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "(none)"
    return "(none)" if value is None else str(value)


def default_integration_name(receiver: WebhookReceiver) -> str:
    """The name sync gives a receiver's integration: ``webhook_receiver-<name>``."""
    return f"webhook_receiver-{receiver.name}"


def secret_fingerprint(secret: str) -> str:
    """A short, one-way fingerprint of a secret, to tell whether upstream holds the same one.

    Used when upstream does not return ``configuration.secret_key``.
    """
    return hashlib.blake2b(secret.encode("utf-8"), digest_size=4, person=b"whr-secret-fp").hexdigest()


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
    """Make the receiver's webhook integration upstream match its handlers.

    :param client: the store's API client.
    :param receiver: whose handlers decide what to observe.
    :param url: the public URL of the receiver's endpoint.
    :param name: the integration's name; :func:`default_integration_name`
        when not given.
    :param secret_key: the secret upstream should send; the current app's
        (:meth:`WebhookReceiver.secret_key`) when not given.
    :param enabled: whether the integration delivers.
    :param dry_run: compute the changes and write nothing.
    :raises SyncError: if the receiver has no handlers, several integrations
        match, or an event would exceed upstream's quota of webhooks.
    :raises MoltinAPIError: if upstream refuses a call.
    """
    if not url.startswith(("http://", "https://")):
        raise SyncError(f"the URL must start with http:// or https://, not {url[:40]!r}")
    observes = receiver.observes()
    if not observes:
        raise SyncError(f"receiver {receiver.name!r} has no handlers: there is nothing to observe")
    unknown = unknown_events(observes)
    if unknown:
        raise SyncError(f"upstream refuses events it does not know: {', '.join(unknown)}; rename or remove"
                        " those handlers (custom API events are named '<slug>_ext.created')")
    name = name or default_integration_name(receiver)
    if secret_key is None:
        secret_key = receiver.secret_key()
    description = (f"Managed by webhook_receiver: `flask webhooks sync` keeps it in step with"
                   f" the app's handlers (secret {secret_fingerprint(secret_key)}).")

    integrations = client.list_integrations()
    webhooks = [i for i in integrations if i.get("integration_type") == "webhook"]
    current = _find(webhooks, name, url)
    desired: dict[str, Any] = {
        "name": name,
        "description": description,
        "enabled": enabled,
        "observes": observes,
        "configuration": {"url": url, "secret_key": secret_key},
    }
    _check_quota(webhooks, current, observes)

    if current is None:
        changes: dict[str, tuple[Any, Any]] = {
            key: (None, value) for key, value in desired.items() if key != "configuration"}
        changes["url"] = (None, url)
        changes["secret_key"] = (None, REDACTED)
        created = None
        if not dry_run:
            created = client.create_integration(
                name=name, url=url, observes=observes, secret_key=secret_key,
                description=description, enabled=enabled)
        return SyncResult("created", _redacted(created), changes, dry_run)

    changes = {}
    update: dict[str, Any] = {}
    for key in ("name", "description", "enabled"):
        if current.get(key) != desired[key]:
            changes[key] = (current.get(key), desired[key])
            update[key] = desired[key]
    if sorted(current.get("observes") or []) != observes:
        changes["observes"] = (sorted(current.get("observes") or []), observes)
        update["observes"] = observes
    configuration = current.get("configuration") or {}
    if configuration.get("url") != url:
        changes["url"] = (configuration.get("url"), url)
        update["configuration"] = desired["configuration"]
    if "secret_key" in configuration and configuration["secret_key"] != secret_key:
        changes["secret_key"] = (REDACTED, REDACTED)
        update["configuration"] = desired["configuration"]
    elif "description" in update:
        # Upstream hides the secret: the fingerprint in the description tells.
        update["configuration"] = desired["configuration"]
    if not update:
        return SyncResult("unchanged", _redacted(current), {}, dry_run)
    result = {**current, **update} if dry_run else client.update_integration(current["id"], **update)
    return SyncResult("updated", _redacted(result), changes, dry_run)


def _find(webhooks: list[dict[str, Any]], name: str, url: str) -> dict[str, Any] | None:
    for matches, how in (([i for i in webhooks if i.get("name") == name], f"named {name!r}"),
                         ([i for i in webhooks if (i.get("configuration") or {}).get("url") == url],
                          f"delivering to {url}")):
        if len(matches) > 1:
            ids = ", ".join(str(i.get("id")) for i in matches)
            raise SyncError(
                f"{len(matches)} webhook integrations are {how} ({ids}); delete the extra ones"
                " (`flask webhooks delete ID`) and sync again")
        if matches:
            return matches[0]
    return None


def _check_quota(webhooks: list[dict[str, Any]], current: dict[str, Any] | None,
                 observes: list[str]) -> None:
    others = [i for i in webhooks if current is None or i.get("id") != current.get("id")]
    full = [event for event in observes
            if sum(event in (i.get("observes") or ()) for i in others) >= MAX_WEBHOOKS_PER_EVENT]
    if full:
        raise SyncError(
            f"upstream allows at most {MAX_WEBHOOKS_PER_EVENT} webhooks per event, and"
            f" {', '.join(full)} already {'has' if len(full) == 1 else 'have'} that many;"
            " delete one of them (`flask webhooks list` shows them) or stop handling the event")


def _redacted(integration: dict[str, Any] | None) -> dict[str, Any] | None:
    if integration is None:
        return None
    clean, _ = redact(integration)
    return dict(clean)
