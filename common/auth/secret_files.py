"""Secrets the embedded defaults keep in DATA_DIR: the token-signing secret and the first
admin key, each written once with mode 0600."""

from __future__ import annotations

import logging
import os
import secrets
import time
from datetime import datetime
from pathlib import Path

from common.auth.api_keys import new_key
from common.auth.key_store import KeyStore
from common.auth.principal import ADMIN
from common.config import Settings

log = logging.getLogger("notifications.auth")

SECRET_FILE = "auth.secret"
ADMIN_KEY_FILE = "admin.key"


def write_private(path: Path, text: str, *, replace: bool = False) -> bool:
    """Write `text` to a new file only its owner can read; False if it existed (and not
    `replace`). O_EXCL makes two processes starting together agree on one file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if replace:
        path.unlink(missing_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as file:
        file.write(text + "\n")
    return True


def _read_written(path: Path) -> str:
    """A file another process may be writing this very moment: wait briefly for its text."""
    for _ in range(50):
        text = path.read_text().strip()
        if text:
            return text
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty; delete it and start again")


def auth_secret(settings: Settings) -> str | None:
    """AUTH_SECRET, or on the embedded defaults a secret generated once into DATA_DIR. With
    MongoDB and no AUTH_SECRET: None (instances could not agree on a generated one)."""
    if settings.auth_secret:
        return settings.auth_secret
    if settings.mongo_uri:
        return None
    path = settings.data_dir / SECRET_FILE
    if write_private(path, secrets.token_urlsafe(48)):
        log.info("event=auth_secret_created path=%s", path)
    return _read_written(path)


def ensure_admin_key(settings: Settings, keys: KeyStore, now: datetime) -> Path | None:
    """On the embedded defaults with no ADMIN_API_KEY and no key at all, create an admin key
    and write it to DATA_DIR/admin.key: the path, or None when nothing was needed."""
    if settings.mongo_uri or settings.admin_api_key or keys.count():
        return None
    key, secret = new_key("admin (created at first start)", [ADMIN], now)
    if not keys.add_first(key):
        return None  # another process starting at the same moment made the first key
    path = settings.data_dir / ADMIN_KEY_FILE
    write_private(path, secret, replace=True)
    log.info("event=admin_key_created key=%s path=%s", key.id, path)
    return path


def bootstrap_admin_key(settings: Settings) -> str | None:
    """What `serve` says at start about the admin key: created now, or where it is."""
    from common.auth.key_store import SqliteKeyStore
    from common.model import utcnow

    if settings.mongo_uri or settings.admin_api_key:
        return None
    keys = SqliteKeyStore(settings.data_dir / "access.db", timeout=settings.store_timeout)
    try:
        created = ensure_admin_key(settings, keys, utcnow())
    finally:
        keys.close()
    path = settings.data_dir / ADMIN_KEY_FILE
    if created:
        return (
            f"created an admin API key in {path} (mode 0600); send it as "
            f'"Authorization: Bearer $(cat {path})" and log in to the web pages with it'
        )
    if path.exists():
        return f"admin API key: {path}"
    return None
