"""Where webhook endpoints and their deliveries live: one port, an adapter per backend.

Deliveries are claimed like notifications: a claim moves one due row to `sending` with a lease
and a fresh token, compare-and-set, and only the holder of the token records the outcome, so
two dispatchers (threads or processes) never make the same attempt at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime

from common.config import Settings
from common.webhooks.records import AttemptOutcome, Delivery, Endpoint


class WebhookStore(ABC):
    # -- endpoints --

    @abstractmethod
    def add_endpoint(self, endpoint: Endpoint) -> None: ...

    @abstractmethod
    def get_endpoint(self, endpoint_id: str) -> Endpoint | None: ...

    @abstractmethod
    def list_endpoints(self) -> list[Endpoint]:
        """Every endpoint, oldest first."""

    @abstractmethod
    def delete_endpoint(self, endpoint_id: str) -> bool:
        """Remove the endpoint and its deliveries; False if there was none."""

    @abstractmethod
    def set_secrets(
        self,
        endpoint_id: str,
        secret: str,
        previous_secret: str | None,
        previous_until: datetime | None,
    ) -> bool: ...

    @abstractmethod
    def record_endpoint_success(self, endpoint_id: str) -> None:
        """Reset the count of failed attempts in a row."""

    @abstractmethod
    def record_endpoint_failure(
        self, endpoint_id: str, error: str, limit: int, now: datetime
    ) -> Endpoint | None:
        """Count one more failed attempt in a row; the count reaching `limit` disables the
        endpoint with `error` as the reason. The endpoint after the change (None: deleted)."""

    @abstractmethod
    def enable_endpoint(self, endpoint_id: str) -> bool:
        """Enable it again with a fresh count; False if there is no such endpoint."""

    # -- deliveries --

    @abstractmethod
    def add_deliveries(self, deliveries: Sequence[Delivery]) -> None: ...

    @abstractmethod
    def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    @abstractmethod
    def list_deliveries(
        self, endpoint_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Delivery], str | None]:
        """Newest first; the cursor is None on the last page. A bad cursor: ValidationError."""

    @abstractmethod
    def claim_due(self, now: datetime, lease_until: datetime, token: str) -> Delivery | None:
        """Claim one delivery whose attempt is due (pending and next_attempt_at <= now, or a
        claim whose lease ran out), the longest-waiting first; None if none is due."""

    @abstractmethod
    def finish_attempt(self, delivery_id: str, token: str, outcome: AttemptOutcome) -> bool:
        """Record a claimed attempt's outcome; False if the claim was lost (token changed)."""

    @abstractmethod
    def replay(self, delivery_id: str, now: datetime) -> bool:
        """Make the delivery due again now; False if it is unknown or being sent right now."""

    def close(self) -> None:  # noqa: B027 - optional for adapters
        pass


def make_webhook_store(settings: Settings) -> WebhookStore:
    """MongoDB when MONGO_URI is set, else a SQLite file of its own under DATA_DIR."""
    if settings.mongo_uri:
        from common.mongo_client import mongo_client
        from common.webhooks.mongo import MongoWebhookStore

        return MongoWebhookStore(mongo_client(settings), settings.mongo_db)
    from common.webhooks.sqlite import SqliteWebhookStore

    return SqliteWebhookStore(settings.data_dir / "webhooks.db", timeout=settings.store_timeout)
