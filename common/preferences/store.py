"""Where each user's preferences live: one document per user, replaced whole by a PUT and
changed in place, atomically, by an opt-out (an unsubscribe link).

One port, an adapter per backend (SQLite, MongoDB); the rule an opt-out applies is here, so
that both adapters apply the same one.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime

from common.config import Settings
from common.errors import ValidationError
from common.preferences.document import CHANNELS, category_name, default_preferences


def with_opt_out(document: dict | None, category: str | None, channel: str) -> dict:
    """A copy of `document` (the defaults if None) with `channel` turned off for `category`,
    or for every category when `category` is None. Applying it twice changes nothing."""
    changed = json.loads(json.dumps(document)) if document else default_preferences()
    if category is None:
        changed.setdefault("channels", {})[channel] = False
    else:
        changed.setdefault("categories", {}).setdefault(category, {})[channel] = False
    return changed


def check_opt_out(category: str | None, channel: str) -> str | None:
    """The category's normal name; ValidationError for an unknown channel or a bad name."""
    if channel not in CHANNELS:
        raise ValidationError(
            "invalid opt-out", {"channel": f"must be one of {', '.join(CHANNELS)}"}
        )
    if category is None:
        return None
    name = category_name(category)
    if name is None:
        raise ValidationError("invalid opt-out", {"category": "is not a category name"})
    return name


def encode(document: dict) -> str:
    # JSON text on both backends: category names may hold "." (a path separator in MongoDB
    # updates) and the document must come back exactly as it was written.
    return json.dumps(document, sort_keys=True)


def decode(text: str) -> dict:
    return json.loads(text)


class PreferenceStore(ABC):
    @abstractmethod
    def get(self, user_id: str) -> dict | None:
        """The user's normalised document, or None if they never set any."""

    @abstractmethod
    def get_many(self, user_ids: Iterable[str]) -> dict[str, dict]:
        """The documents of those of `user_ids` that have one."""

    @abstractmethod
    def put(self, user_id: str, document: dict, now: datetime) -> None:
        """Replace the user's document with `document` (already validated)."""

    def opt_out(self, user_id: str, category: str | None, channel: str, now: datetime) -> dict:
        """Turn `channel` off for `category` (for every category if None), atomically against
        every other writer, thread or process; return the new document. Idempotent."""
        return self._opt_out(user_id, check_opt_out(category, channel), channel, now)

    @abstractmethod
    def _opt_out(self, user_id: str, category: str | None, channel: str, now: datetime) -> dict:
        """Apply `with_opt_out` to the stored document in one atomic read-modify-write."""

    def close(self) -> None:  # noqa: B027 - optional for adapters
        pass


def make_preference_store(settings: Settings) -> PreferenceStore:
    """MongoDB when MONGO_URI is set, else a SQLite file of its own under DATA_DIR."""
    if settings.mongo_uri:
        from common.mongo_client import mongo_client
        from common.preferences.mongo import MongoPreferenceStore

        return MongoPreferenceStore(mongo_client(settings), settings.mongo_db)
    from common.preferences.sqlite import SqlitePreferenceStore

    return SqlitePreferenceStore(
        settings.data_dir / "preferences.db", timeout=settings.store_timeout
    )
