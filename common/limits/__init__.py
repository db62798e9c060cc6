"""Rate limits and caps counted in a shared store: MongoDB when MONGO_URI is set, else SQLite."""

from __future__ import annotations

from common.config import Settings
from common.limits.limiter import Limiter
from common.limits.rules import RateDecision, sms_country_allowed
from common.limits.store import LimitStore


def make_limit_store(settings: Settings) -> LimitStore:
    if settings.mongo_uri:
        from common.limits.mongo import MongoLimitStore
        from common.mongo_client import mongo_client

        return MongoLimitStore(mongo_client(settings), settings.mongo_db, settings.store_timeout)
    from common.limits.sqlite import SqliteLimitStore

    return SqliteLimitStore(settings.data_dir / "limits.db", settings.store_timeout)


__all__ = ["LimitStore", "Limiter", "RateDecision", "make_limit_store", "sms_country_allowed"]
