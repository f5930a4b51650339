"""A small HTTP proxy on 127.0.0.1 in front of a real OpenSearch node, to inject bulk faults.

It forwards every request to the node and records it (method, path, headers, body size). For
``_bulk`` requests it can instead answer a whole-request error with any status (``fail_next``: one
status per coming bulk request), rewrite items of the node's answer to any status (``item_faults``:
per id, the statuses of its coming answers; ``reject_first``: a 429 the first time a chosen id is
seen), or drop the last item of the answer (``drop_item``). Documents whose items are rewritten did
reach the node, like a rejection after a coordinating-node timeout: a retry must overwrite them, not
duplicate them.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
# the error types OpenSearch gives these item statuses; any other is "injected"
_ERROR_TYPES = {
    400: "mapper_parsing_exception",
    404: "index_not_found_exception",
    409: "version_conflict_engine_exception",
    429: "rejected_execution_exception",
    503: "unavailable_shards_exception",
}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body_bytes: int


@dataclass
class FaultProxy:
    upstream: str
    fail_next: list[int] = field(default_factory=list)  # statuses for the next whole bulk requests
    reject_first: Callable[[str], bool] = lambda _id: False  # which ids get a 429 the first time
    # per id, the statuses its next answers are rewritten to, one per bulk request that carries it
    item_faults: dict[str, list[int]] = field(default_factory=dict)
    drop_item: bool = False
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server context
    requests: list[Seen] = field(default_factory=list)
    injected: int = 0
    _seen_ids: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def bulk_requests(self) -> list[Seen]:
        return [r for r in self.requests if "/_bulk" in r.path]

    def __enter__(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in req.headers.items()}
        is_bulk = "/_bulk" in req.path and req.command in ("POST", "PUT")
        with self._lock:
            self.requests.append(
                Seen(req.command, req.path, {k.lower(): v for k, v in headers.items()}, len(body))
            )
            fail = self.fail_next.pop(0) if is_bulk and self.fail_next else None
        if fail is not None:
            self.injected += 1
            error = {"error": {"type": "injected", "reason": f"injected {fail}"}, "status": fail}
            return self._reply(req, fail, {"content-type": "application/json"}, json.dumps(error).encode())
        status, reply_headers, data = self._forward(req.command, req.path, headers, body)
        if is_bulk and status == 200:
            data = self._rewrite_bulk(data)
        self._reply(req, status, reply_headers, data)

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        target = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
            conn.request(method, path, body=body if body else None, headers=sent)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def _rewrite_bulk(self, data: bytes) -> bytes:
        response = json.loads(data)
        with self._lock:
            for item in response["items"]:
                result = next(iter(item.values()))
                doc_id = result.get("_id")
                first = doc_id not in self._seen_ids
                self._seen_ids.add(doc_id)
                if not 200 <= result["status"] < 300:
                    continue  # a real failure is passed on as the node answered it
                queued = self.item_faults.get(doc_id)
                if queued:
                    status = queued.pop(0)
                elif first and self.reject_first(doc_id):
                    status = 429
                else:
                    continue
                kind = _ERROR_TYPES.get(status, "injected")
                result["status"] = status
                result["error"] = {"type": kind, "reason": f"injected {status}"}
                response["errors"] = True
                self.injected += 1
            if self.drop_item and response["items"]:
                response["items"].pop()
                self.injected += 1
        return json.dumps(response).encode()

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes) -> None:
        req.send_response(status)
        for key, value in headers.items():
            if key not in HOP_BY_HOP:
                req.send_header(key, value)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data)
