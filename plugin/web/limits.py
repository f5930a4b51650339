"""Request limits of the HTTP API, applied before a body is parsed: its size, the time it may take
to arrive, a per-client search rate; and bounds on the JSON a form field may hold."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from starlette.exceptions import HTTPException

from ...errors import ConfigError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RateLimiter:
    """A token bucket per client: ``burst`` requests at once, refilled at ``per_minute``.

    Remembers at most ``max_clients`` clients (least recently seen forgotten first), so a flood of
    addresses cannot grow it without bound. ``per_minute = 0`` turns it off.
    """

    def __init__(self, per_minute: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def acquire(self, client: str, now: float | None = None) -> float:
        """Take one token: 0.0 when allowed, else the seconds until the next token."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before the app parses any of it.

    A declared Content-Length over the limit is refused at once; a body without one (chunked) is
    read up to the limit and then handed to the app from memory. ``overhead``: what the body may
    hold beyond ``max_bytes`` (form fields around an upload); the message names ``max_bytes``, the
    limit the client was told (``/api/settings``), which the app checks exactly on the upload.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, overhead: int = 0) -> None:
        self.app = app
        self.limit = max_bytes
        self.max_bytes = max_bytes + overhead

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _reject(send, 400, "bad_request", "Content-Length is not a number")
            elif int(declared) > self.max_bytes:
                await _reject(send, 413, "too_large", self._message())
            else:
                await self.app(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body"))
            if len(body) > self.max_bytes:
                await _reject(send, 413, "too_large", self._message())
                return
        await self.app(scope, _replay(bytes(body)), send)

    def _message(self) -> str:
        return f"the upload is larger than {self.limit} bytes"


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _reject(
    send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps({"error": {"code": code, "message": message}}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class SearchRate:
    """ASGI middleware: a client over its search rate gets 429 before its body is read or parsed.

    ``paths``: the POST paths the rate applies to.
    """

    def __init__(self, app: ASGIApp, rate: RateLimiter, paths: frozenset[str]) -> None:
        self.app, self.rate, self.paths = app, rate, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path") in self.paths:
            client = scope.get("client") or ("?", 0)
            wait = self.rate.acquire(str(client[0]))
            if wait > 0:
                retry = {"Retry-After": str(math.ceil(wait))}
                await _reject(send, 429, "rate_limited", "too many searches; slow down", retry)
                return
        await self.app(scope, receive, send)


class BodyTimeout(HTTPException):
    """The request body did not arrive in time (FastAPI passes HTTPExceptions from reading on)."""

    def __init__(self, seconds: float) -> None:
        message = f"the request body did not arrive within {seconds:g} s"
        super().__init__(408, message, headers={"Connection": "close"})


class BodyDeadline:
    """ASGI middleware: the whole request body must arrive within ``seconds`` of the request's
    start, else 408 and the connection is closed, so a client trickling its body cannot hold a
    connection and a worker for ever. Receives after the body (disconnect checks) are not timed."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.seconds
        body_done, started = False, False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
                body_done = message["type"] != "http.request" or not message.get("more_body")
                return message
            raise BodyTimeout(self.seconds)

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except BodyTimeout as exc:  # raised outside FastAPI (by BodyLimit reading a chunked body)
            if started:
                raise
            await _reject(send, 408, "timeout", str(exc.detail), {"Connection": "close"})


def parse_json_field(text: str, name: str, max_depth: int = 8, max_chars: int = 16384) -> Any:
    """``text`` parsed as JSON after a cheap check of its length and nesting, so a deeply nested
    value is refused (ConfigError, a 400) before the recursive parser can run out of stack."""
    if len(text) > max_chars:
        raise ConfigError(f"{name} is longer than {max_chars} characters")
    if _nesting(text) > max_depth:
        raise ConfigError(f"{name} nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{name} must be JSON: {exc}") from None


class SecurityHeaders:
    """ASGI middleware: the page loads only its own scripts, styles and images, and is never framed."""

    HEADERS = (
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
            b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _nesting(text: str) -> int:
    """How deep the brackets outside strings nest (one linear pass; the text need not be JSON)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest
