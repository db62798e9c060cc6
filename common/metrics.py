"""The service's Prometheus metrics: defined here once, fed by `MetricsListener` (an EventBus
listener) and `record_webhook_attempt`, and rendered by `render` for GET /metrics.

With PROMETHEUS_MULTIPROC_DIR set (several worker processes), each process writes its samples
there and a scrape collects all of them; otherwise the process's own default registry is read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from common.notification_events import (
    ACCEPTED,
    DELIVERED,
    FAILED,
    RETRY_SCHEDULED,
    SENT,
    SUPPRESSED,
    NotificationEvent,
)

log = logging.getLogger("notifications.metrics")

ACCEPTED_TOTAL = Counter("notifications_accepted", "Notifications stored by the intake.", ["type"])
SENT_TOTAL = Counter("notifications_sent", "Notifications a provider accepted.", ["type"])
FAILED_TOTAL = Counter(
    "notifications_failed", "Notifications given up on (failed permanently).", ["type"]
)
RETRIED_TOTAL = Counter(
    "notifications_retried", "Failed attempts that scheduled a retry.", ["type"]
)
SUPPRESSED_TOTAL = Counter(
    "notifications_suppressed", "Notifications never sent: suppressed or opted out.", ["type"]
)
PROVIDER_ERRORS_TOTAL = Counter(
    "notification_provider_errors",
    "Failed delivery attempts, transient or permanent, by the provider's error code.",
    ["provider", "code"],
)
RECEIPTS_TOTAL = Counter(
    "notification_delivery_receipts", "Delivery reports from providers, by status.", ["status"]
)
WEBHOOK_DELIVERIES_TOTAL = Counter(
    "webhook_deliveries", "Outbound webhook delivery attempts, by result.", ["result"]
)
# From acceptance to the provider's acceptance: a queue hop (milliseconds) up to a retry
# schedule that ends within the hour.
DELIVERY_BUCKETS = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    *(30, 60, 120, 300, 600, 1800, 3600),
)
DELIVERY_SECONDS = Histogram(
    "notification_delivery_seconds",
    "Seconds from acceptance to the provider's acceptance.",
    ["type"],
    buckets=DELIVERY_BUCKETS,
)

# What a scrape waits for the queue's depths: a broker that does not answer must not make
# Prometheus time out the whole scrape.
QUEUE_DEPTH_TIMEOUT = 2.0
# Labels for values a channel may leave unset.
NO_CODE = "none"
UNKNOWN_PROVIDER = "unknown"


# Labelled children, looked up once per process: `labels()` takes a lock and checks every
# label value on each call, most of this listener's cost per event (measured: a SENT event
# went from about 8.5 to 3 us). prometheus_client returns the same child every time anyway,
# and its multiprocess values follow a fork by themselves. Keyed by id(): the metrics are
# module globals that live as long as the process.
_children: dict[tuple, object] = {}


def _child(metric, *labels: str):
    child = _children.get((id(metric), labels))
    if child is None:
        child = _children.setdefault((id(metric), labels), metric.labels(*labels))
    return child


class MetricsListener:
    """Counts what happens to notifications; never raises into a delivery (the EventBus
    drops a listener's error anyway, but a counter has nothing to fail on)."""

    def notify(self, events: Sequence[NotificationEvent]) -> None:
        for event in events:
            self._count(event)

    @staticmethod
    def _count(event: NotificationEvent) -> None:
        notification = event.notification
        kind = notification.notification_type
        if event.type == ACCEPTED:
            _child(ACCEPTED_TOTAL, kind).inc()
        elif event.type == SENT:
            _child(SENT_TOTAL, kind).inc()
            waited = (event.at - notification.created_at).total_seconds()
            _child(DELIVERY_SECONDS, kind).observe(max(0.0, waited))
        elif event.type == SUPPRESSED:
            _child(SUPPRESSED_TOTAL, kind).inc()
        elif event.type == DELIVERED:
            _child(RECEIPTS_TOTAL, "delivered").inc()
        elif event.type == FAILED and notification.delivery_status:
            # A provider's report (undelivered, failed) about a message it had accepted.
            _child(RECEIPTS_TOTAL, notification.delivery_status).inc()
        elif event.type in (FAILED, RETRY_SCHEDULED):
            counter = FAILED_TOTAL if event.type == FAILED else RETRIED_TOTAL
            _child(counter, kind).inc()
            provider = event.provider or UNKNOWN_PROVIDER
            _child(PROVIDER_ERRORS_TOTAL, provider, event.error_code or NO_CODE).inc()


def record_webhook_attempt(result: str) -> None:
    """One outbound webhook attempt: "succeeded" or "failed"."""
    WEBHOOK_DELIVERIES_TOTAL.labels(result).inc()


# Returns {"messages": n, "dead_letters": n}, or None when the queue cannot tell in time.
DepthReader = Callable[[float], "dict[str, int] | None"]


class QueueDepthCollector:
    """The queue's depths, read at scrape time (a gauge set elsewhere would be stale, and
    each worker process would report its own)."""

    def __init__(self, read_depths: DepthReader, timeout: float = QUEUE_DEPTH_TIMEOUT):
        self.read_depths = read_depths
        self.timeout = timeout

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration, and no broker call while registering

    def collect(self) -> Iterator[Metric]:
        try:
            depths = self.read_depths(self.timeout)
        except Exception as error:  # noqa: BLE001 - an unknown depth is reported as such
            log.warning("event=queue_depth_unknown error=%r", error)
            depths = None
        yield GaugeMetricFamily(
            "notification_queue_up",
            "1 when the queue answered this scrape's depth query, else 0.",
            value=0 if depths is None else 1,
        )
        if depths is None:
            return
        yield GaugeMetricFamily(
            "notification_queue_depth",
            "Messages waiting in the delivery queue.",
            value=depths.get("messages", 0),
        )
        yield GaugeMetricFamily(
            "notification_dead_letter_depth",
            "Messages in the dead-letter queue.",
            value=depths.get("dead_letters", 0),
        )


def render(read_depths: DepthReader) -> bytes:
    """The metrics in Prometheus' text format, for one scrape."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # As prometheus_client's docs ask: a fresh registry per scrape, reading every
        # process's files.
        MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    registry.register(QueueDepthCollector(read_depths))
    return generate_latest(registry)
