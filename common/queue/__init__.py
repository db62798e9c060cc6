"""Queueing: in-process when nothing is configured, RabbitMQ when RABBITMQ_URL is set."""

from __future__ import annotations

from common.config import Settings
from common.queue.base import NotificationQueue, QueueUnavailable, StopSignal


def make_queue(settings: Settings) -> NotificationQueue:
    if settings.rabbitmq_url:
        from common.queue.rabbitmq import RabbitQueue

        return RabbitQueue(
            settings.rabbitmq_url,
            queue_name=settings.queue_name,
            dead_letter_queue=settings.dlq_name,
            prefetch_count=settings.prefetch_count,
            workers=settings.delivery_workers,
            publish_timeout=settings.publish_timeout,
            max_handling_failures=settings.max_handling_failures,
        )
    from common.queue.memory import MemoryQueue

    return MemoryQueue(
        workers=settings.delivery_workers, max_handling_failures=settings.max_handling_failures
    )


__all__ = ["NotificationQueue", "QueueUnavailable", "StopSignal", "make_queue"]
