"""SMS through Twilio's Messages API with the official client, created once per channel and
reused; Twilio's error code decides between transient and permanent failure."""

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

# The only errors that fail a notification for good: Twilio says the recipient cannot get it.
# https://www.twilio.com/docs/api/errors
RECIPIENT_ERROR_CODES = frozenset(
    {
        21211,  # invalid 'To' phone number
        21214,  # 'To' phone number cannot be reached
        21217,  # the phone number does not appear to be valid
        21610,  # the recipient unsubscribed (replied STOP)
        21612,  # Twilio cannot route to this number
        21614,  # 'To' number is not a mobile number
        30003,  # unreachable destination handset (when reported at once)
        30005,  # unknown destination handset: the number does not exist
        30006,  # landline or unreachable carrier
    }
)
# The recipient errors that say the number itself is bad or refuses us, whatever the message:
# the number goes on the suppression list. The others (unreachable handset, a carrier that
# cannot route it now) may clear up, so they fail the one notification only.
SUPPRESSING_ERROR_CODES = frozenset({21211, 21610, 21614})
# Errors in the sender's own setup: transient (the operator fixes it, then the retry succeeds)
# and logged as a configuration problem.
SENDER_SETUP_ERROR_CODES = frozenset(
    {
        20003,  # authentication failed: wrong TWILIO_SID or TWILIO_AUTH_TOKEN
        20005,  # the account is not active
        20404,  # resource not found: a wrong TWILIO_API_BASE_URL or account SID
        21212,  # invalid 'From' phone number
        21408,  # the account may not send to the 'To' number's region (geo permissions)
        21606,  # the 'From' number cannot send messages to this destination
        21608,  # a trial account may send to verified numbers only
        21659,  # the 'From' number is not a Twilio number, or not for this country
    }
)
# HTTP statuses that say the request never reached a messages resource we may use.
SENDER_SETUP_HTTP_STATUSES = frozenset({401, 403, 404})
# Where Twilio posts each message's delivery receipts (functions/http_providers.py).
STATUS_CALLBACK_PATH = "/providers/twilio/status"


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
    provider = "twilio"

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
                status_callback=self.settings.public_url + STATUS_CALLBACK_PATH,
            )
        except Exception as error:  # deliver() never raises: every failure is an outcome
            return classify_twilio_error(error, self.timeout)
        detail = f"Twilio message {message.sid} ({message.status})"
        return DeliveryResult.sent(detail, provider_message_id=message.sid)

    def check(self) -> str:
        account = self.client.api.v2010.accounts(self.settings.twilio_sid).fetch()
        return f"Twilio account {account.friendly_name or account.sid} is {account.status}"


def classify_twilio_error(error: Exception, timeout: float = DEFAULT_TIMEOUT) -> DeliveryResult:
    """Transient or permanent, with Twilio's error code and message, for what the client raised.
    Permanent only for RECIPIENT_ERROR_CODES; everything else may succeed on a later try."""
    if isinstance(error, TwilioRestException):
        # The client prefixes Twilio's message with its own "Unable to create record: ".
        reason = error.msg.partition("Unable to create record: ")[2] or error.msg
        return classify_twilio_reply(error.status, error.code, reason)
    if isinstance(error, TwilioServiceException):
        return classify_twilio_reply(error.status, error.code, error.detail or error.title)
    if isinstance(error, requests.Timeout):
        return DeliveryResult.transient(f"Twilio did not answer within {timeout:g} s")
    if isinstance(error, (requests.RequestException, OSError)):
        return DeliveryResult.transient(_clip(f"cannot reach Twilio: {error}"))
    if isinstance(error, TwilioException):
        return DeliveryResult.transient(_clip(f"Twilio client error: {error}"))
    return DeliveryResult.transient(_clip(f"{type(error).__name__}: {error}"))


def classify_twilio_reply(status: int, code: int | None, reason: str) -> DeliveryResult:
    """One error answer of Twilio's API: its HTTP status, error code and message; the result's
    error_code is Twilio's code, or the HTTP status when the answer had none."""
    detail = f"Twilio error {code}: {reason}"
    error_code = str(code if code is not None else status)
    if code in RECIPIENT_ERROR_CODES:
        suppress = code in SUPPRESSING_ERROR_CODES
        return DeliveryResult.permanent(_clip(detail), suppress=suppress, error_code=error_code)
    if status == 401 or code == 20003:
        detail = f"authentication failed: {detail}"
        return DeliveryResult.transient(_clip(detail), setup_problem=True, error_code=error_code)
    setup = code in SENDER_SETUP_ERROR_CODES or status in SENDER_SETUP_HTTP_STATUSES
    # Not setup: 21611 queue full, 429 rate limits, 5xx outages and any code not listed above.
    return DeliveryResult.transient(_clip(detail), setup_problem=setup, error_code=error_code)


def _clip(detail: str) -> str:
    return detail if len(detail) <= MAX_DETAIL_LENGTH else detail[: MAX_DETAIL_LENGTH - 3] + "..."
