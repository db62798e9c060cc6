"""HTTP function (ASGI): a user's inbox as a Server-Sent Events stream,
GET /users/<user_id>/notifications/stream (common/inbox_stream.py).

Asynchronous, so that an open stream holds no thread while it waits: run it with
`functions-framework --asgi --target http_stream --source functions/http_stream.py`.
"""

import logging
import re

import _repo_root  # noqa: F401  (makes `common` importable under the stock CLI)
import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from common import runtime
from common.cors import cors_headers, preflight_headers
from common.errors import ServiceError, TooManyRequests, Unauthorized
from common.http import WWW_AUTHENTICATE, host_allowed
from common.inbox_stream import InboxStream, parse_last_event_id
from common.inbox_stream_open import StoreCalls, grant_stream, open_stream
from common.runtime import require_valid_settings
from common.user_ids import check_user_id

require_valid_settings()
log = logging.getLogger("notifications.stream")

ROUTES = ("/users/<user_id>/notifications/stream",)
STREAM_PATH = re.compile(r"/users/([^/]+)/notifications/stream/?")
EVENT_STREAM = "text/event-stream; charset=utf-8"
STREAM_HEADERS = {
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # nginx would otherwise hold the events back in its buffer
}


@functions_framework.aio.http
async def http_stream(request: Request) -> Response:
    settings = runtime.current_settings()
    cors = cors_headers(request.headers.get("Origin"), settings)
    path = STREAM_PATH.fullmatch(request.url.path)
    if path is None:
        return _error(404, {"error": "no route for this path"}, cors)
    if request.method == "OPTIONS":
        return Response(
            status_code=204,
            headers=dict(preflight_headers(request.headers.get("Origin"), settings)),
        )
    if request.method != "GET":
        error = {"error": f"method {request.method} not allowed here; use GET"}
        return _error(405, error, [*cors, ("Allow", "GET, OPTIONS")])
    if not host_allowed(request.headers.get("Host", ""), settings.allowed_hosts):
        return _error(400, {"error": "this service does not answer to that Host name"}, cors)
    try:
        stream = await _open(request, path.group(1), settings)
    except ServiceError as error:
        return _error(error.http_status, error.to_dict(), cors + _error_headers(error))
    except Exception:
        log.exception("event=unhandled_error view=http_stream")
        body = {"error": "internal error; the details are in the service log"}
        return _error(500, body, cors)
    return EventStreamResponse(stream, headers={**STREAM_HEADERS, **dict(cors)})


class EventStreamResponse(StreamingResponse):
    """The stream's events; its subscription is closed however the answer ends, even when
    the client leaves before the first event was read."""

    def __init__(self, stream: InboxStream, headers: dict[str, str]):
        super().__init__(stream.events(), headers=headers, media_type=EVENT_STREAM)
        self.stream = stream

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.subscription.close()


async def _open(request: Request, user_id: str, settings):
    """Check who is asking (before anything is read), then subscribe and read the start."""
    check_user_id(user_id)
    blocking = StoreCalls(settings.store_timeout * 2 + 1)
    access = await blocking(runtime.get_access)
    client = request.client.host if request.client else "unknown"
    authorization = request.headers.get("Authorization")
    ticket = request.query_params.get("ticket")
    grant = await blocking(grant_stream, access, user_id, authorization, ticket, client)
    last_id = request.headers.get("Last-Event-ID") or request.query_params.get("last_event_id")
    last_event_id = parse_last_event_id(last_id)
    service = await blocking(runtime.get_service)
    return await open_stream(access, service, runtime.get_inbox_feed(), grant, last_event_id)


def _error_headers(error: ServiceError) -> list[tuple[str, str]]:
    if isinstance(error, Unauthorized):
        return [("WWW-Authenticate", WWW_AUTHENTICATE)]
    if isinstance(error, TooManyRequests):
        return list(error.headers.items())
    return []


def _error(status: int, body: dict, headers: list[tuple[str, str]]) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=dict(headers))
