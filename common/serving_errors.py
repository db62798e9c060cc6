"""The errors the runner's server answers itself, before any function sees the request, worded
as the functions word theirs: a JSON `{"error": ...}`, never a server's plain text."""

from __future__ import annotations

import json
from http import HTTPStatus

MESSAGES = {
    400: "the request is not valid HTTP",
    408: "the request was not received in time; send it again",
    413: "the request body is larger than this service accepts; send less at once",
    431: "the request headers are too large",
    500: "the service failed to answer this request",
    503: "the service has too many open connections; try again shortly",
}


def error_body(status: int) -> bytes:
    message = (
        MESSAGES.get(status) or f"the request was refused: {HTTPStatus(status).phrase.lower()}"
    )
    return json.dumps({"error": message}).encode()


def closing_response(status: int) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection, for the protocol layer
    (where no ASGI `send` exists yet: headers not in, malformed, too many connections)."""
    body = error_body(status)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def send_error(send, status: int) -> None:
    """Answer an ASGI request with the JSON error and close its connection (its body, if any,
    is not read: the connection cannot carry another request)."""
    body = error_body(status)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
