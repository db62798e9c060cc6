"""Where notification templates live: every version of every key, each immutable once written.

One port, an adapter per backend (SQLite, MongoDB); the rules of which write makes which version
are here, so that both adapters apply the same ones.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime

from common.config import Settings
from common.errors import Conflict, NotFound


@dataclass(frozen=True)
class TemplateVersion:
    key: str
    version: int  # 1, 2, ...
    document: dict  # the validated template document, kept as opaque JSON
    created_at: datetime  # UTC, to the millisecond
    archived: bool = False  # a property of the key, reported on each of its versions

    def to_dict(self) -> dict:
        """The version as the JSON API shows it: the document plus what the store adds."""
        return {
            **self.document,
            "version": self.version,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "archived": self.archived,
        }


def next_version(key: str, latest: int | None, archived: bool, *, starting: bool) -> int:
    """The version a write makes, or why it may not. `starting`: a create (POST /templates),
    which may restart an archived key; else an add_version (PUT /templates/<key>)."""
    if latest is None:
        if starting:
            return 1
        raise NotFound(f"no template {key}")
    if starting and not archived:
        raise Conflict(f"template {key} exists; PUT /templates/{key} makes its next version")
    if not starting and archived:
        raise Conflict(f"template {key} is archived; POST /templates to start it again")
    return latest + 1


def encode(document: dict) -> str:
    # Stored as JSON text on both backends: BSON would refuse some keys ("$...") and huge
    # integers, and the document must come back exactly as it was written.
    return json.dumps(document)


def decode(text: str) -> dict:
    return json.loads(text)


def millis(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def from_millis(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


class TemplateStore(ABC):
    def create(self, key: str, document: dict, now: datetime) -> TemplateVersion:
        """Version 1 of a new key, or the next version of an archived one (un-archiving it);
        Conflict if the key exists and is not archived."""
        return self._write(key, document, now, starting=True)

    def add_version(self, key: str, document: dict, now: datetime) -> TemplateVersion:
        """The next version of an existing key; NotFound without one, Conflict if archived.
        Concurrent calls each get their own number and none is lost."""
        return self._write(key, document, now, starting=False)

    @abstractmethod
    def _write(self, key: str, document: dict, now: datetime, *, starting: bool) -> TemplateVersion:
        """Write the version `next_version` allows, atomically against other writers."""

    @abstractmethod
    def latest(self, key: str) -> TemplateVersion | None:
        """The newest version, archived or not: the caller decides what archived means."""

    @abstractmethod
    def get(self, key: str, version: int) -> TemplateVersion | None: ...

    @abstractmethod
    def versions(self, key: str) -> list[int]:
        """The key's version numbers, ascending; empty if there is no such key."""

    @abstractmethod
    def list(self) -> list[TemplateVersion]:
        """The latest version of every key, sorted by key, archived ones included."""

    @abstractmethod
    def archive(self, key: str, now: datetime) -> TemplateVersion | None:
        """Archive the key (idempotent) and return its latest version; None if no such key."""

    @abstractmethod
    def count(self) -> int:
        """How many keys there are, archived ones included."""

    def close(self) -> None:  # noqa: B027 - optional for adapters
        pass


def make_template_store(settings: Settings) -> TemplateStore:
    """MongoDB when MONGO_URI is set, else a SQLite file of its own under DATA_DIR."""
    if settings.mongo_uri:
        from common.mongo_client import mongo_client
        from common.templates.mongo import MongoTemplateStore

        return MongoTemplateStore(mongo_client(settings), settings.mongo_db)
    from common.templates.sqlite import SqliteTemplateStore

    return SqliteTemplateStore(settings.data_dir / "templates.db", timeout=settings.store_timeout)
