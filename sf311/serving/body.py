"""Request bodies of the prediction API: the size limit, and the answers to malformed or
invalid bodies (400, 413, 422), each a small JSON error the OpenAPI document declares."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

# 10,000 full records of about 1 KB fit with room to spare; anything larger is refused unread.
MAX_BODY_BYTES = 16 * 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ErrorOut(BaseModel):
    """Why a request was refused."""

    detail: str


Answer = dict[str, Any]
MALFORMED: Answer = {"model": ErrorOut, "description": "The body is not valid JSON"}
TOO_LARGE: Answer = {"model": ErrorOut, "description": f"The body is over {MAX_BODY_BYTES} bytes"}
NO_MODEL: Answer = {"model": ErrorOut, "description": "No champion model is loaded yet"}


def _too_large(limit: int) -> bytes:
    return json.dumps({"detail": f"request body over the limit of {limit} bytes"}).encode()


class BodyLimit:
    """ASGI middleware refusing bodies over `limit` bytes with 413 before the app reads them:
    by the declared Content-Length, or by counting the bytes of a chunked body."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                # The server has checked it is a number and delivers no more than it says.
                if int(value) > self.limit:
                    await self._refuse(send)
                    return
                await self.app(scope, receive, send)
                return
            if name == b"transfer-encoding":
                chunked = True
        if not chunked:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, send: Send) -> None:
        body = _too_large(self.limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                # The rest of the body is never read, so the connection cannot be reused.
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Return 400 for a body that is not JSON, else 422 listing each invalid field by its
    location; the offending input is not echoed (it may be huge, or NaN, which JSON lacks)."""
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        ctx = errors[0].get("ctx") or {}
        where = errors[0]["loc"][-1]
        reason = f"malformed JSON body (character {where}): {ctx.get('error', 'decode error')}"
        return JSONResponse({"detail": reason}, status_code=400)
    fields = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    return JSONResponse({"detail": fields}, status_code=422)
