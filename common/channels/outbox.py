"""The local outbox for channels without a provider: each email becomes an `.eml` file and each
SMS a `.json` file under `DATA_DIR/outbox`, named after the notification id."""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from pathlib import Path

from common.channels.base import Channel, DeliveryResult
from common.channels.email import InvalidMessage, build_message
from common.config import Settings
from common.model import EMAIL, SMS, Notification, utcnow
from common.unsubscribe import UnsubscribeLinks

LOCAL_SENDER = "notifications@localhost"  # From of outbox mail when no sender is configured


def outbox_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "outbox"


def outbox_path(directory: Path, notification: Notification, suffix: str) -> Path:
    """`<id><suffix>`: a redelivery of the same notification overwrites its file, never adds one."""
    safe_id = re.sub(r"[^A-Za-z0-9._-]", "_", notification.id)
    return directory / f"{safe_id}{suffix}"


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so a reader never sees half a message."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; an outbox is there to be read
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_writable(directory: Path) -> str:
    """For `check`: create the outbox and prove a file can be written there, or raise OSError."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):
        pass
    return f"outbox {directory} is writable"


def _write(path: Path, data: bytes, provider_message_id: str) -> DeliveryResult:
    try:
        write_atomically(path, data)
    except OSError as error:  # a full disk or a read-only folder can be fixed: retry later
        return DeliveryResult.transient(f"cannot write {path}: {error}")
    return DeliveryResult.sent(str(path), provider_message_id)


class OutboxEmailChannel(Channel):
    """Email written as a real `.eml` file (the same message SMTP would carry) instead of sent."""

    notification_type = EMAIL
    provider = "outbox"

    def __init__(self, settings: Settings, unsubscribe: UnsubscribeLinks | None = None):
        self.directory = outbox_dir(settings)
        self.unsubscribe = unsubscribe
        self.sender = settings.sender_address or LOCAL_SENDER
        self.default_subject = settings.mail_default_subject
        self.description = f"email to local outbox {self.directory} (MAIL_SERVER unset)"

    def deliver(self, notification: Notification) -> DeliveryResult:
        links = self.unsubscribe.headers(notification) if self.unsubscribe else None
        try:
            message = build_message(notification, self.sender, self.default_subject, links)
        except InvalidMessage as error:
            return DeliveryResult.permanent(str(error))
        except ValueError as error:
            return DeliveryResult.transient(f"cannot use sender {self.sender!r}: {error}")
        path = outbox_path(self.directory, notification, ".eml")
        return _write(path, bytes(message), message["Message-ID"])

    def check(self) -> str:
        return check_writable(self.directory)


class OutboxSmsChannel(Channel):
    """SMS written as a small `.json` file (to, from, body) instead of sent."""

    notification_type = SMS
    provider = "outbox"

    def __init__(self, settings: Settings):
        self.directory = outbox_dir(settings)
        self.sender = settings.twilio_phone_number
        self.description = f"sms to local outbox {self.directory} (TWILIO_SID unset)"

    def deliver(self, notification: Notification) -> DeliveryResult:
        if not notification.phone:
            return DeliveryResult.permanent("the notification has no phone number")
        record = {
            "id": notification.id,
            "provider_message_id": f"outbox-{uuid.uuid4()}",
            "user_id": notification.user_id,
            "to": notification.phone,
            "from": self.sender,
            "body": notification.message,
            "written_at": utcnow().isoformat().replace("+00:00", "Z"),
        }
        data = json.dumps(record, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
        path = outbox_path(self.directory, notification, ".json")
        return _write(path, data, record["provider_message_id"])

    def check(self) -> str:
        return check_writable(self.directory)
