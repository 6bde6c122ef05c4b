"""Bounds the API puts on what a client sends and what it sends back.

- ``BodySizeLimit``: an ASGI middleware that counts request-body bytes as they stream in and
  answers 413 once a path's limit is passed, so an oversized body is never buffered. Starlette has
  no body-size setting (uvicorn neither), hence this small middleware.
- ``bounded_errors``: a 422's error list, capped in count and with every echoed value cut, so a
  huge invalid request cannot produce a huge response (FastAPI's default handler repeats the
  input once per error).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import HTTPException

from heart_pipeline.errors import shorten

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# How much of an offending value a 422 shows: enough to recognise it, never the payload.
MAX_ECHO_CHARS = 40
MAX_MESSAGE_CHARS = 200


def body_too_large(limit: int) -> HTTPException:
    # An HTTPException, not a custom error: FastAPI re-raises those from body parsing (anything else
    # becomes a 400 "error parsing the body"), and its handler turns it into the 413 response.
    return HTTPException(status_code=413, detail=f"request body above the limit of {limit:,} bytes")


class BodySizeLimit:
    """Refuse request bodies above ``limits[path]`` (else ``default_limit``) bytes, while streaming.

    A declared Content-Length above the limit is refused before a byte is read; a chunked or
    under-declared body is counted chunk by chunk and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, default_limit: int, limits: Mapping[str, int]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = dict(limits)

    def limit_for(self, path: str) -> int:
        return self.limits.get(path, self.default_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            status, detail = _check_declared(declared, limit)
            if status:
                await _send_json(send, status, {"detail": detail})
                return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise body_too_large(limit)
            return message

        await self.app(scope, counted_receive, send)


def _check_declared(declared: bytes, limit: int) -> tuple[int, str]:
    try:
        length = int(declared)
    except ValueError:
        return 400, "Content-Length is not a number"
    if length > limit:
        return 413, body_too_large(limit).detail
    return 0, ""


async def _send_json(send: Send, status: int, content: Any) -> None:
    body = json.dumps(content).encode()
    # Connection: close, because the unread body is still on the wire.
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _echo(value: Any) -> Any:
    """A JSON-safe, short stand-in for a value a client sent (NaN and infinity are not JSON)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHO_CHARS else value[:MAX_ECHO_CHARS] + "...(truncated)"
    return f"<{type(value).__name__}>"


def bounded_errors(errors: Sequence[Any], max_errors: int) -> dict[str, Any]:
    """At most ``max_errors`` errors, each with its location, type, message and a cut echo of the value."""
    shown = []
    for error in errors[:max_errors]:
        item: dict[str, Any] = {
            "loc": [_echo(part) for part in error.get("loc", ())][:10],
            "type": error.get("type"),
            "msg": shorten(str(error.get("msg", "")), MAX_MESSAGE_CHARS),
        }
        if "input" in error and not isinstance(error["input"], dict | list):
            item["input"] = _echo(error["input"])
        if error.get("ctx"):
            item["ctx"] = {str(k)[:MAX_ECHO_CHARS]: _echo(v) for k, v in list(error["ctx"].items())[:5]}
        shown.append(item)
    return {"detail": shown, "errors_total": len(errors), "errors_shown": len(shown)}
