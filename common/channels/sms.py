"""SMS through Twilio's Messages API with the official client, created once per channel and
reused; Twilio's HTTP status decides between transient and permanent failure."""

from __future__ import annotations

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from common.channels.base import Channel, DeliveryResult
from common.config import Settings
from common.model import SMS, Notification

DEFAULT_TIMEOUT = 10.0  # seconds per HTTP request to Twilio
MAX_DETAIL_LENGTH = 500


def make_twilio_client(settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> Client:
    """A Twilio client with a request timeout, pointed at TWILIO_API_BASE_URL when it is set."""
    client = Client(
        settings.twilio_sid,
        settings.twilio_auth_token,
        http_client=TwilioHttpClient(timeout=timeout),
    )
    if settings.twilio_api_base_url:
        # Every Messages URL is built from the `api` domain's base_url (twilio.base.domain).
        client.api.base_url = settings.twilio_api_base_url.rstrip("/")
        # TWILIO_EDGE/TWILIO_REGION would rewrite the host name; an explicit URL is meant as is.
        client.edge = None
        client.region = None
    return client


class SmsChannel(Channel):
    """Sends text messages from TWILIO_PHONE_NUMBER with the account TWILIO_SID."""

    notification_type = SMS

    def __init__(self, settings: Settings, timeout: float = DEFAULT_TIMEOUT):
        if not (
            settings.twilio_sid and settings.twilio_auth_token and settings.twilio_phone_number
        ):
            raise ValueError("SmsChannel needs TWILIO_SID, TWILIO_AUTH_TOKEN, TWILIO_PHONE_NUMBER")
        self.settings = settings
        self.timeout = timeout
        # One client per instance: its HTTP session keeps connections to Twilio open between
        # deliveries, the cold-start rule of shared/DESIGN.md.
        self.client = make_twilio_client(settings, timeout)
        where = settings.twilio_api_base_url or "api.twilio.com"
        self.description = f"sms via Twilio ({where}) from {settings.twilio_phone_number}"

    def deliver(self, notification: Notification) -> DeliveryResult:
        if not notification.phone:
            return DeliveryResult.permanent("the notification has no phone number")
        try:
            message = self.client.messages.create(
                to=notification.phone,
                from_=self.settings.twilio_phone_number,
                body=notification.message,
            )
        except Exception as error:  # deliver() never raises: every failure is an outcome
            return classify_twilio_error(error, self.timeout)
        return DeliveryResult.sent(f"Twilio message {message.sid} ({message.status})")

    def check(self) -> str:
        account = self.client.api.v2010.accounts(self.settings.twilio_sid).fetch()
        return f"Twilio account {account.friendly_name or account.sid} is {account.status}"


def classify_twilio_error(error: Exception, timeout: float = DEFAULT_TIMEOUT) -> DeliveryResult:
    """Transient or permanent, with Twilio's error code and message, for what the client raised."""
    if isinstance(error, TwilioRestException):
        # The client prefixes Twilio's message with its own "Unable to create record: ".
        reason = error.msg.partition("Unable to create record: ")[2] or error.msg
        return _by_status(error.status, f"Twilio error {error.code}: {reason}")
    if isinstance(error, TwilioServiceException):
        return _by_status(error.status, f"Twilio error {error.code}: {error.detail or error.title}")
    if isinstance(error, requests.Timeout):
        return DeliveryResult.transient(f"Twilio did not answer within {timeout:g} s")
    if isinstance(error, (requests.RequestException, OSError)):
        return DeliveryResult.transient(_clip(f"cannot reach Twilio: {error}"))
    if isinstance(error, TwilioException):
        return DeliveryResult.transient(_clip(f"Twilio client error: {error}"))
    return DeliveryResult.transient(_clip(f"{type(error).__name__}: {error}"))


def _by_status(status: int, detail: str) -> DeliveryResult:
    if status == 401:
        # Wrong SID or token: the operator fixes the configuration and the retry succeeds.
        return DeliveryResult.transient(_clip(f"authentication failed: {detail}"))
    if status == 429 or status >= 500 or status < 400:
        return DeliveryResult.transient(_clip(detail))
    return DeliveryResult.permanent(_clip(detail))  # the request itself is wrong: 21211 and kin


def _clip(detail: str) -> str:
    return detail if len(detail) <= MAX_DETAIL_LENGTH else detail[: MAX_DETAIL_LENGTH - 3] + "..."
