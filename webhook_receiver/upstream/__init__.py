"""The upstream side: the Elastic Path (Moltin) API client and the sync of integrations."""

from .client import DEFAULT_BASE_URL, MoltinClient, check_base_url
from .inbox_logs import show_upstream_logs
from .sync import IntegrationChange, SyncResult, Target, group_members, sync_integration, sync_target

__all__ = [
    "DEFAULT_BASE_URL",
    "IntegrationChange",
    "MoltinClient",
    "SyncResult",
    "Target",
    "check_base_url",
    "group_members",
    "show_upstream_logs",
    "sync_integration",
    "sync_target",
]
