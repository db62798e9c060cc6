"""The channel interface: deliver one notification, say sent, transient or permanent failure."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass

from common.model import Notification


class Outcome(enum.Enum):
    SENT = "sent"
    TRANSIENT = "transient"  # worth retrying: the provider was down, slow or rate-limiting
    PERMANENT = "permanent"  # retrying cannot help: the recipient or request is invalid


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    detail: str = ""  # the provider's reason on failure, a provider id or outbox path on success
    # True when the failure lies in the sender's own setup (credentials, sender address, a
    # blocklisted IP, a quota), not in the recipient: transient, and logged for the operator.
    setup_problem: bool = False
    # True when a permanent failure says the address itself is dead or refuses us (SMTP 550
    # on RCPT, Twilio 21211/21610/21614): the address goes on the suppression list.
    suppress: bool = False
    # The id the provider gave the message (Twilio's SID, the email's Message-ID).
    provider_message_id: str | None = None
    # The provider's code for a failure (the SMTP reply code, Twilio's error code), for metrics.
    error_code: str | None = None

    @classmethod
    def sent(cls, detail: str = "", provider_message_id: str | None = None) -> DeliveryResult:
        return cls(Outcome.SENT, detail, provider_message_id=provider_message_id)

    @classmethod
    def transient(
        cls, detail: str, *, setup_problem: bool = False, error_code: str | None = None
    ) -> DeliveryResult:
        return cls(Outcome.TRANSIENT, detail, setup_problem, error_code=error_code)

    @classmethod
    def permanent(
        cls, detail: str, *, suppress: bool = False, error_code: str | None = None
    ) -> DeliveryResult:
        return cls(Outcome.PERMANENT, detail, suppress=suppress, error_code=error_code)


class Channel(ABC):
    """One way of reaching a user. Implementations never raise for provider errors."""

    notification_type: str
    provider: str = "unknown"  # who handles it, in metrics and events: smtp, twilio, outbox
    description: str = ""  # one line for start-up and `check`: where messages go
    # True when delivering only records the notification as sent (nothing leaves the service):
    # the service then does it in one guarded write, without a claim and its lease.
    stored_only: bool = False

    @abstractmethod
    def deliver(self, notification: Notification) -> DeliveryResult: ...

    def check(self) -> str:
        """Probe the provider for `local_runner.py check`; raise if it does not answer."""
        return "ok"
