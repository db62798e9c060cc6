"""The /stats numbers as the home page and the dashboard show them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.model import PENDING, QUEUED, SENDING, STATUSES, TYPES

IN_FLIGHT = (PENDING, QUEUED, SENDING)


def stats_view(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The /stats numbers plus what the pages show: in-flight total and each bar's share."""
    total = stats["total"]
    by_status = stats["by_status"]

    def share(count: int) -> float:
        return round(100 * count / total, 1) if total else 0.0

    return {
        **stats,
        "in_flight": sum(by_status.get(s, 0) for s in IN_FLIGHT),
        "status_share": {s: share(by_status.get(s, 0)) for s in STATUSES},
        "type_share": {t: share(stats["by_type"].get(t, 0)) for t in TYPES},
    }
