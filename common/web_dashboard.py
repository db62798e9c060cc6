"""What the dashboard shows beyond the counts: the last hour's activity as chart geometry, the
providers' delivery receipts and the webhooks' health. The page renders it on first load and
GET /dashboard/activity returns the same (JSON) for app.js to redraw with.

The geometry is computed here only, so the first render and every live redraw agree.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

log = logging.getLogger("notifications.web")

WIDTH, LEFT, RIGHT = 600, 52, 590
COUNTS_TOP, COUNTS_BOTTOM = 10, 150
LATENCY_TOP, LATENCY_BOTTOM = 10, 90
LATENCY_TICKS = (
    (1, "1 ms"),
    (10, "10 ms"),
    (100, "100 ms"),
    (1_000, "1 s"),
    (10_000, "10 s"),
    (60_000, "1 min"),
    (600_000, "10 min"),
    (3_600_000, "1 h"),
)
SERIES = ("accepted", "sent", "failed")
RECEIPT_ORDER = ("queued", "sent", "delivered", "undelivered", "failed")


def _x(index: int) -> float:
    return round(LEFT + (RIGHT - LEFT) * index / 59, 1)


def _nice_ceiling(value: float) -> int:
    """The smallest of 1, 2, 4, 6, 8 x 10^k that is >= value (so the middle tick is whole)."""
    scale = 10 ** max(0, math.floor(math.log10(max(value, 1))))
    return next(int(step * scale) for step in (1, 2, 4, 6, 8, 10) if step * scale >= value)


def _path(values: Sequence[float | None], y) -> str:
    """An SVG path through the points, broken where a value is missing; a point alone is a
    zero-length segment, which the round line cap draws as a dot."""
    parts, run = [], 0
    for index, value in enumerate([*values, None]):
        if value is None:
            if run == 1:
                parts.append("h0")
            run = 0
            continue
        parts.append(f"{'L' if run else 'M'}{_x(index)} {y(value)}")
        run += 1
    return " ".join(parts)


def _clock(iso: str) -> str:
    return iso[11:16]  # HH:MM of "YYYY-MM-DDTHH:MM:SSZ"


def _ms(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"


def chart(points: Sequence[dict]) -> dict[str, Any]:
    """Paths, ticks and outage bands of the two charts (counts, latency) for 60 points."""
    top = _nice_ceiling(max([1] + [p[s] for p in points for s in SERIES]))
    span = COUNTS_BOTTOM - COUNTS_TOP

    def count_y(value: float) -> float:
        return round(COUNTS_BOTTOM - span * value / top, 1)

    slowest = max([1_000] + [p["p99_ms"] or 0 for p in points])
    ceiling = next((ms for ms, _ in LATENCY_TICKS if ms >= slowest), LATENCY_TICKS[-1][0])
    decades = math.log10(ceiling)

    def latency_y(ms: float) -> float:
        share = math.log10(min(max(ms, 1), ceiling)) / decades
        return round(LATENCY_BOTTOM - (LATENCY_BOTTOM - LATENCY_TOP) * share, 1)

    step = (RIGHT - LEFT) / 59
    return {
        "counts": {
            "paths": {s: _path([p[s] for p in points], count_y) for s in SERIES},
            "y_ticks": [{"y": count_y(v), "label": f"{v:,}"} for v in (0, top // 2, top)],
            # Minutes where failures outnumber sends: shaded, so an outage shows as a band.
            "alerts": [
                {"x": round(_x(i) - step / 2, 1), "width": round(step, 1)}
                for i, p in enumerate(points)
                if p["failed"] and p["failed"] >= p["sent"]
            ],
        },
        "latency": {
            "paths": {q: _path([p[f"{q}_ms"] for p in points], latency_y) for q in ("p50", "p99")},
            "y_ticks": [
                {"y": latency_y(ms), "label": label} for ms, label in LATENCY_TICKS if ms <= ceiling
            ],
        },
        "x_ticks": [
            {"x": _x(i), "label": _clock(points[i]["minute"])} for i in (0, 15, 30, 45, 59)
        ],
    }


def summary(points: Sequence[dict]) -> str:
    """The charts in words, for screen readers (and as the SVGs' titles)."""
    totals = {s: sum(p[s] for p in points) for s in SERIES}
    text = (
        f"Last hour, per minute, {_clock(points[0]['minute'])} to "
        f"{_clock(points[-1]['minute'])} UTC: {totals['accepted']} accepted, "
        f"{totals['sent']} sent, {totals['failed']} failed."
    )
    if totals["sent"] or totals["accepted"] or totals["failed"]:
        busiest = max(points, key=lambda p: p["accepted"])
        text += f" Busiest minute {_clock(busiest['minute'])} with {busiest['accepted']} accepted."
    failing = [p for p in points if p["failed"] and p["failed"] >= p["sent"]]
    if failing:
        text += (
            f" Failures outnumbered sends in {len(failing)} minutes, from "
            f"{_clock(failing[0]['minute'])} to {_clock(failing[-1]['minute'])}."
        )
    latest = next((p for p in reversed(points) if p["p50_ms"] is not None), None)
    if latest:
        text += (
            f" Latest delivery latency ({_clock(latest['minute'])}): "
            f"p50 {_ms(latest['p50_ms'])}, p99 {_ms(latest['p99_ms'])}."
        )
    return text


def activity_view(service, now: datetime) -> dict[str, Any]:
    """The last hour for the page; `recorded` False when the deployment keeps no activity."""
    activity = getattr(service, "activity", None)
    if activity is None:
        return {"recorded": False}
    try:
        points = activity.last_hour(now)
    except Exception as error:  # noqa: BLE001 - one panel's outage must not break the page
        log.warning("event=dashboard_activity_unavailable error=%s", error)
        return {"recorded": True, "available": False, "error": "the activity store did not answer"}
    return {
        "recorded": True,
        "available": True,
        "minutes": points,
        "totals": {s: sum(p[s] for p in points) for s in SERIES},
        "summary": summary(points),
        "chart": chart(points),
    }


def receipts_view(service) -> dict[str, Any]:
    """Notifications by the provider's last report (None: never reported), known ones first."""
    count = getattr(service.store, "count_by_delivery_status", None)
    if count is None:
        return {"available": False, "counts": []}
    try:
        counts = {status or "not_reported": n for status, n in count().items()}
    except Exception as error:  # noqa: BLE001 - one panel's outage must not break the page
        log.warning("event=dashboard_receipts_unavailable error=%s", error)
        return {"available": False, "counts": [], "error": "the store did not answer"}
    order = [s for s in RECEIPT_ORDER if s in counts] + sorted(
        s for s in counts if s not in RECEIPT_ORDER
    )
    return {"available": True, "counts": [{"status": s, "count": counts[s]} for s in order]}


def _endpoint(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):  # a record rather than the documented dict
        raw = raw.to_dict() if hasattr(raw, "to_dict") else dict(vars(raw))
    failures = raw.get("failures_in_a_row", raw.get("consecutive_failures")) or 0
    return {
        "id": str(raw.get("id", "")),
        "url": str(raw.get("url", "")),
        "events": list(raw.get("events") or []),
        "enabled": not raw.get("disabled_at"),
        "disabled_reason": raw.get("disabled_reason"),
        "failures_in_a_row": int(failures),
        "last_error": str(raw.get("last_error") or raw.get("last_failure") or "") or None,
    }


def webhooks_view(service) -> dict[str, Any]:
    """The endpoints' health, or `available` False when there are no webhooks here (or the
    webhook store did not answer: the dashboard must still render)."""
    webhooks = getattr(service, "webhooks", None)
    if webhooks is None:
        return {"available": False, "endpoints": []}
    try:
        endpoints = [_endpoint(e) for e in webhooks.list()]
    except Exception as error:  # noqa: BLE001 - one panel's outage must not break the page
        log.warning("event=dashboard_webhooks_unavailable error=%s", error)
        return {"available": False, "endpoints": [], "error": "the webhook store did not answer"}
    return {"available": True, "endpoints": endpoints}


def dashboard_data(service, now: datetime) -> dict[str, Any]:
    """Everything GET /dashboard/activity returns."""
    return {
        "activity": activity_view(service, now),
        "receipts": receipts_view(service),
        "webhooks": webhooks_view(service),
    }
