"""Sending webhook deliveries: claim one due delivery, POST it signed, record the outcome.

`kick()` runs that loop on a small thread pool of the process, right after events are stored;
`dispatch_due()` runs it in the caller's thread (the sweep) for retries and for deliveries no
process sent at once. Each claim holds a lease, so a crashed attempt is made again later
(at least once) and two dispatchers never make the same attempt at the same time.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import requests

from common.config import Settings
from common.errors import ValidationError
from common.metrics import record_webhook_attempt
from common.webhooks.records import FAILED, PENDING, SUCCEEDED, AttemptOutcome, Delivery
from common.webhooks.signing import signed_headers
from common.webhooks.store import WebhookStore
from common.webhooks.urls import check_url

log = logging.getLogger("notifications.webhooks")

WORKERS = 3
MAX_ERROR_LENGTH = 200
USER_AGENT = "notifications-webhooks/1"


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        store: WebhookStore,
        clock: Callable[[], datetime],
        session: requests.Session | None = None,
        on_disabled: Callable[[], None] = lambda: None,
    ):
        """`on_disabled`: called when an attempt's failure disables its endpoint."""
        self.settings = settings
        self.store = store
        self.clock = clock
        if session is None:
            session = requests.Session()
            # No proxy from the environment: the address checked must be the one connected to.
            session.trust_env = False
        self.session = session
        self.on_disabled = on_disabled
        # The lease covers a connect and a read at the timeout each, and the bookkeeping.
        self.lease = timedelta(seconds=settings.webhook_timeout * 3 + 10)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._queued = 0  # kicks submitted and not yet started
        self._closed = False

    # -- running --

    def dispatch_due(self, limit: int = 100) -> int:
        """Make up to `limit` due attempts in this thread; the number made."""
        made = 0
        while made < limit and not self._closed:
            token = uuid.uuid4().hex
            now = self.clock()
            delivery = self.store.claim_due(now, now + self.lease, token)
            if delivery is None:
                break
            self.attempt(delivery, token)
            made += 1
        return made

    def kick(self) -> None:
        """Make the due attempts soon on the pool; never waits. A kick while every worker is
        busy queues at most one run per worker: each run loops until nothing is due."""
        with self._lock:
            if self._closed or self._queued >= WORKERS:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="webhooks")
            self._queued += 1
            self._pool.submit(self._run_kick)

    def _run_kick(self) -> None:
        with self._lock:
            self._queued -= 1
        try:
            while self.dispatch_due(limit=100):
                pass
        except Exception:  # noqa: BLE001 - the sweep tries again; the pool must live on
            log.exception("event=webhook_dispatch_failed")

    def close(self) -> None:
        """Stop the pool: the attempts in flight end, nothing new starts."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- one attempt --

    def attempt(self, delivery: Delivery, token: str) -> None:
        endpoint = self.store.get_endpoint(delivery.endpoint_id)
        attempts = delivery.attempts + 1
        if endpoint is None or endpoint.disabled_at is not None:
            # Not sent: nothing to count against the endpoint, and no attempt made.
            why = "the endpoint was deleted" if endpoint is None else "the endpoint is disabled"
            outcome = AttemptOutcome(FAILED, delivery.attempts, last_error=why)
            self.store.finish_attempt(delivery.id, token, outcome)
            return
        status_code, error = self._post(
            endpoint.url, endpoint.signing_secrets(self.clock()), delivery
        )
        now = self.clock()
        record_webhook_attempt("succeeded" if error is None else "failed")
        if error is None:
            outcome = AttemptOutcome(SUCCEEDED, attempts, status_code, None, None, now)
            self.store.finish_attempt(delivery.id, token, outcome)
            self.store.record_endpoint_success(endpoint.id)
            return
        self._record_failure(endpoint.id, delivery, token, status_code, error, now)

    def _record_failure(
        self,
        endpoint_id: str,
        delivery: Delivery,
        token: str,
        status_code: int | None,
        error: str,
        now: datetime,
    ) -> None:
        """The next attempt per WEBHOOK_RETRY_SCHEDULE, or `failed` past it; and one more
        failure in a row for the endpoint, which may disable it."""
        attempts = delivery.attempts + 1
        schedule = self.settings.webhook_retry_schedule
        if attempts <= len(schedule):
            later = now + timedelta(seconds=schedule[attempts - 1])
            outcome = AttemptOutcome(PENDING, attempts, status_code, error, later)
        else:
            outcome = AttemptOutcome(FAILED, attempts, status_code, error)
        self.store.finish_attempt(delivery.id, token, outcome)
        log.warning(
            "webhook=%s endpoint=%s event=webhook_attempt_failed attempt=%d error=%s",
            delivery.id,
            endpoint_id,
            attempts,
            error,
        )
        limit = self.settings.webhook_failure_limit
        after = self.store.record_endpoint_failure(endpoint_id, error, limit, now)
        # Enabled when this attempt began: disabled now means this failure (or one beside it)
        # reached the limit.
        if after is not None and after.disabled_at is not None:
            log.error("endpoint=%s event=webhook_endpoint_disabled reason=%s", endpoint_id, error)
            self.on_disabled()

    def _post(
        self, url: str, secrets_in_use: list[str], delivery: Delivery
    ) -> tuple[int | None, str | None]:
        """(status code, None) for a 2xx, else (status code or None, why it failed)."""
        try:
            check_url(url, self.settings.webhook_allow_private)
        except ValidationError as error:
            return None, _short(f"url refused: {error.fields.get('url', error.message)}")
        # The receiver checks the timestamp against its own clock: the wall clock's time, not
        # the service clock's (which tests hold still).
        headers = signed_headers(secrets_in_use, delivery.id, datetime.now(UTC), delivery.payload)
        headers["User-Agent"] = USER_AGENT
        timeout = self.settings.webhook_timeout
        try:
            with self.session.post(
                url,
                data=delivery.payload.encode(),
                headers=headers,
                timeout=timeout,
                allow_redirects=False,  # a redirect could lead anywhere, unchecked
                stream=True,  # the reply's body is not needed: never read a large one
            ) as reply:
                code = reply.status_code
        except requests.Timeout:
            return None, f"timed out after {timeout:g}s"
        except requests.ConnectionError as error:
            return None, _short(f"could not connect: {type(error).__name__}")
        except requests.RequestException as error:
            return None, _short(f"request failed: {type(error).__name__}")
        if 200 <= code < 300:
            return code, None
        return code, f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 1] + "…"
