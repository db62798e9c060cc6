"""Where suppressed addresses live: one entry per (channel, address), the first reason kept.

One port, an adapter per backend (SQLite, MongoDB); normalisation, the cursor and the record
shape are here so that both adapters apply the same rules.
"""

from __future__ import annotations

import base64
import binascii
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from common.config import Settings
from common.errors import ValidationError

EMAIL = "email"
SMS = "sms"
CHANNELS = (EMAIL, SMS)


@dataclass(frozen=True)
class Suppression:
    channel: str
    address: str  # normalised
    reason: str
    notification_id: str | None  # the send that failed, when known
    created_at: datetime  # UTC, to the millisecond

    def to_dict(self) -> dict:
        return {
            "channel": self.channel,
            "address": self.address,
            "reason": self.reason,
            "notification_id": self.notification_id,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
        }


def check_channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise ValueError(f"no suppression list for channel {channel!r}")
    return channel


def normalise_address(channel: str, address: str) -> str:
    """The form an address is stored and looked up in. Email: the whole address lowercased
    (mailbox case is almost never significant, and a bounce must catch every spelling);
    sms: E.164 as given, without spaces."""
    check_channel(channel)
    if channel == EMAIL:
        return address.strip().lower()
    return "".join(address.split())


def millis(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def from_millis(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


@dataclass(frozen=True)
class Position:
    """Where a page ended, in newest-first order: (created_at, channel, address) descending."""

    created_at: int  # millis
    channel: str
    address: str

    @classmethod
    def after(cls, item: Suppression) -> Position:
        return cls(millis(item.created_at), item.channel, item.address)

    def encode(self) -> str:
        raw = json.dumps([self.created_at, self.channel, self.address]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Position:
        try:
            padded = text + "=" * (-len(text) % 4)
            created, channel, address = json.loads(base64.urlsafe_b64decode(padded))
            if not (isinstance(created, int) and isinstance(channel, str)):
                raise TypeError("bad cursor fields")
            return cls(created, channel, str(address))
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise ValidationError(
                "invalid cursor", {"cursor": "is not a cursor this API gave out"}
            ) from None


class SuppressionStore(ABC):
    @abstractmethod
    def add(
        self,
        channel: str,
        address: str,
        reason: str,
        notification_id: str | None,
        now: datetime,
    ) -> bool:
        """Suppress the address; True if newly added, False if it was already (the first
        reason and time are kept)."""

    @abstractmethod
    def get(self, channel: str, address: str) -> Suppression | None: ...

    @abstractmethod
    def find(self, channel: str, addresses: Sequence[str]) -> dict[str, Suppression]:
        """The suppressed ones among `addresses`, keyed by normalised address."""

    @abstractmethod
    def list(
        self, channel: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Suppression], str | None]:
        """Newest first; the cursor is None on the last page. A bad cursor: ValidationError."""

    @abstractmethod
    def remove(self, channel: str, address: str) -> bool:
        """Lift the suppression; False if there was none."""

    def close(self) -> None:  # noqa: B027 - optional for adapters
        pass


def make_suppression_store(settings: Settings) -> SuppressionStore:
    """MongoDB when MONGO_URI is set, else a SQLite file of its own under DATA_DIR."""
    if settings.mongo_uri:
        from common.mongo_client import mongo_client
        from common.suppressions.mongo import MongoSuppressionStore

        return MongoSuppressionStore(mongo_client(settings), settings.mongo_db)
    from common.suppressions.sqlite import SqliteSuppressionStore

    return SqliteSuppressionStore(
        settings.data_dir / "suppressions.db", timeout=settings.store_timeout
    )
