"""The ASGI layer around every request: request id, body limit, response signing, access log, metrics.

One pure ASGI middleware (no per-request task or thread of its own):

- **request id**: ``X-Request-ID`` from the caller when it is a short token (letters, digits, ``._:-``),
  else a fresh one; always returned, and in every log line, audit entry and error body of the request.
- **body limit**: a body over ``CITYGOV_API_MAX_BODY_BYTES`` is refused with 413 before anything parses
  it — by its ``Content-Length`` when given, else while it streams in. Under ``/v1/`` the refusal is
  audited like every other API request.
- **response signing**: every response under ``/v1/`` is buffered and signed (``X-Citygov-Signature``,
  see :mod:`governance.api.signing`), errors included.
- **access log and metrics**: one JSON log line per request (method, route, path without the query —
  queries can hold subject ids —, status, duration, caller), and the Prometheus counters.
- **the data query's fast path**: ``POST /v1/data/query`` goes straight to its handler
  (``ApiState.data_query``), past FastAPI's router, dependency solving and exception middleware, which it
  does not use (it answers every error itself); the route stays registered for the OpenAPI document and
  for other methods (405). The app itself (``governance.api.app``) hands that route to this middleware
  before FastAPI's outer layers (server-error and telemetry middleware, body limit), which it does not use
  either; every other request comes through them to this middleware as before.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

from governance.api.errors import ErrorReply
from governance.api.signing import SIGNATURE_HEADER

if TYPE_CHECKING:
    from governance.api.app import ApiState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("citygov.api")
REQUEST_ID_HEADER = "X-Request-ID"
DATA_QUERY_PATH = "/v1/data/query"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_API_PREFIX = "/v1/"


class ApiMiddleware:
    def __init__(self, app: ASGIApp, state: ApiState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        context = scope.setdefault("state", {})
        context["request_id"] = request_id
        api = scope["path"].startswith(_API_PREFIX)
        status = [500]

        async def respond(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        outgoing = _Signer(self.state, scope, respond) if api else _Tagger(request_id, respond)
        try:
            body = await _read_body(scope, receive, self.state.settings.api_max_body_bytes)
            if body is None:
                await self._too_large(scope, outgoing.send)
            elif self.state.data_route is not None and scope["method"] == "POST" and not scope.get("root_path") \
                    and scope["path"] == DATA_QUERY_PATH:
                # the hot route straight to its handler: the framework's routing, dependency and exception layers
                # add nothing here (the handler answers every error itself, in our error format)
                scope["route"] = self.state.data_route
                response = await self.state.data_query(scope, body)
                await response(scope, _replay(body, receive), outgoing.send)
            else:
                await self.app(scope, _replay(body, receive) if body else receive, outgoing.send)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.state.metrics.observe_request(scope["method"], route, status[0], elapsed)
            if log.isEnabledFor(logging.INFO):  # the line's fields are built only when it is written
                log.info("request", extra={
                    "request_id": request_id, "method": scope["method"], "route": route, "path": scope["path"],
                    "status": status[0], "duration_ms": round(elapsed * 1000, 2), "caller": context.get("caller"),
                })

    async def _too_large(self, scope: Scope, send: Send) -> None:
        limit = self.state.settings.api_max_body_bytes
        reply = ErrorReply(413, "payload_too_large", f"the request body is over {limit} bytes")
        request_id = scope["state"]["request_id"]
        if scope["path"].startswith(_API_PREFIX):
            await self.state.record_rejection(scope, reply)
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": orjson.dumps(reply.body(request_id))})


class _Tagger:
    """Adds the request id to a response that is not signed."""

    def __init__(self, request_id: str, send: Send) -> None:
        self.header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode("ascii"))
        self._send = send

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), self.header]
        await self._send(message)


class _Signer:
    """Holds the response until its body is complete, then sends it with its signature and request id."""

    def __init__(self, state: ApiState, scope: Scope, send: Send) -> None:
        self.state = state
        self.scope = scope
        self._send = send
        self._start: Message | None = None
        self._chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start = message
            return
        if message["type"] != "http.response.body" or self._start is None:
            await self._send(message)
            return
        self._chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self._chunks)
        context = self.scope["state"]
        signature = self.state.signer.sign(
            body, iat=int(self.state.clock().timestamp()), request_id=context["request_id"],
            request_jti=context.get("request_jti"), decision_id=context.get("decision_id"),
            policy_revision=context.get("policy_revision"),
        )
        headers = [(k, v) for k, v in self._start.get("headers", ()) if k.lower() != b"content-length"]
        headers += [(b"content-length", str(len(body)).encode()),
                    (SIGNATURE_HEADER.lower().encode(), signature.encode("ascii")),
                    (REQUEST_ID_HEADER.lower().encode(), context["request_id"].encode("ascii"))]
        await self._send({**self._start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})


def _request_id(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
            break
    return uuid.uuid4().hex


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole body (b"" when there is none), or None when it is over ``limit``."""
    length: int | None = None
    chunked = False
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None  # servers refuse this before us; never guess a length
        elif key == b"transfer-encoding":
            chunked = True
    if length is not None and length > limit:
        return None
    if not length and not chunked:
        return b""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the buffered body over once, then waits on the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
