"""The Standard Webhooks headers of one attempt, signed with the `standardwebhooks` library;
the endpoint's secret is a "whsec_" + base64 key, as the specification describes."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the specification asks for 24 to 64 bytes


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signed_headers(
    secrets_in_use: Sequence[str], webhook_id: str, at: datetime, body: str
) -> dict[str, str]:
    """Headers for `body` sent at `at`: one signature per secret, space-separated (during a
    rotation's grace the receiver may still hold the old secret)."""
    signatures = [Webhook(secret).sign(webhook_id, at, body) for secret in secrets_in_use]
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signatures),
        "Content-Type": "application/json",
    }
