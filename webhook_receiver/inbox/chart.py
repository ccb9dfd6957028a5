"""Deliveries and failures per hour, drawn on the server as SVG: no chart library, no script.

The counts come from :meth:`EventStore.count_by_hour`, one query on every
store of this library; a third-party store without it is counted here from
:meth:`EventStore.events`, at most :data:`CHART_LIMIT` events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

from markupsafe import escape

from ..stores.base import EventStatus, EventStore

__all__ = ["CHART_LIMIT", "RANGES", "Hour", "count_hours", "render_svg"]

#: The ranges the chart covers, by name: hours back from now.
RANGES = {"24h": 24, "7d": 168}
#: The most events read for one chart.
CHART_LIMIT = 100_000

_WIDTH, _HEIGHT, _LEFT, _BOTTOM, _TOP = 720, 180, 40, 24, 12


@dataclass
class Hour:
    """The events received in one hour.

    :param start: the hour's start (epoch seconds).
    :param received: how many were received.
    :param failed: how many of them are failed now.
    """

    start: float
    received: int = 0
    failed: int = 0


def count_hours(store: EventStore, hours: int, now: float) -> tuple[list[Hour], bool]:
    """The last *hours* hours, oldest first, the current one last.

    :returns: the hours and whether :data:`CHART_LIMIT` cut the count short.
    :raises StoreUnavailable: if the store cannot answer.
    """
    current = math.floor(now / 3600) * 3600
    first = current - (hours - 1) * 3600
    buckets = [Hour(first + n * 3600) for n in range(hours)]
    try:
        counted = store.count_by_hour(first)
    except NotImplementedError:
        return _count_listed(store, buckets, first, hours)
    for hour in counted:
        index = int((hour.start - first) // 3600)
        if 0 <= index < hours:
            buckets[index].received += hour.received
            buckets[index].failed += hour.failed
    return buckets, False


def _count_listed(store: EventStore, buckets: list[Hour], first: float, hours: int) -> tuple[list[Hour], bool]:
    """The fallback: count the newest :data:`CHART_LIMIT` events that :meth:`EventStore.events` returns."""
    found = store.events(since=first, limit=CHART_LIMIT)
    for stored in found:
        index = int((stored.received_at - first) // 3600)
        if 0 <= index < hours:
            buckets[index].received += 1
            if stored.status is EventStatus.FAILED:
                buckets[index].failed += 1
    return buckets, len(found) >= CHART_LIMIT


def _label(epoch: float, hours: int) -> str:
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return moment.strftime("%H:%M") if hours <= 24 else moment.strftime("%a %d")


def render_svg(hours: list[Hour], *, title: str, cut_short: bool = False) -> str:
    """The chart as a standalone SVG document: bars of deliveries, failures in front, a title per bar."""
    count = len(hours)
    peak = max((h.received for h in hours), default=0) or 1
    plot_width = _WIDTH - _LEFT - 8
    plot_height = _HEIGHT - _BOTTOM - _TOP
    step = plot_width / max(count, 1)
    bar = max(step * 0.8, 1.0)
    label_every = 6 if count <= 24 else 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img"'
        f' aria-labelledby="t" font-family="sans-serif" font-size="11">',
        f'<title id="t">{escape(title)}</title>',
        f'<line x1="{_LEFT}" y1="{_TOP + plot_height}" x2="{_WIDTH - 8}" y2="{_TOP + plot_height}" stroke="#8a8f98"/>',
        f'<text x="{_LEFT - 6}" y="{_TOP + 8}" text-anchor="end" fill="#555">{peak}</text>',
        f'<text x="{_LEFT - 6}" y="{_TOP + plot_height}" text-anchor="end" fill="#555">0</text>',
    ]
    for n, hour in enumerate(hours):
        x = _LEFT + n * step + (step - bar) / 2
        tall = plot_height * hour.received / peak
        failed_tall = plot_height * hour.failed / peak
        start = datetime.fromtimestamp(hour.start, timezone.utc).strftime("%Y-%m-%d %H:00")
        parts.append(
            f"<g><title>{escape(start)} UTC: {hour.received} received, {hour.failed} failed</title>"
            f'<rect x="{x:.1f}" y="{_TOP + plot_height - tall:.1f}" width="{bar:.1f}" height="{tall:.1f}"'
            f' fill="#5b8def"/>'
            f'<rect x="{x:.1f}" y="{_TOP + plot_height - failed_tall:.1f}" width="{bar:.1f}"'
            f' height="{failed_tall:.1f}" fill="#d64545"/></g>'
        )
        if n % label_every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{_HEIGHT - 8}" text-anchor="middle" fill="#555">'
                f"{escape(_label(hour.start, count))}</text>"
            )
    legend_x = _WIDTH - 230
    parts.append(
        f'<rect x="{legend_x}" y="2" width="10" height="10" fill="#5b8def"/>'
        f'<text x="{legend_x + 14}" y="11" fill="#333">received</text>'
        f'<rect x="{legend_x + 80}" y="2" width="10" height="10" fill="#d64545"/>'
        f'<text x="{legend_x + 94}" y="11" fill="#333">failed</text>'
    )
    if cut_short:
        parts.append(f'<text x="{_LEFT}" y="11" fill="#a33">counted the newest events only</text>')
    parts.append("</svg>")
    return "".join(parts)
