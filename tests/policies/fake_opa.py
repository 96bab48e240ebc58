"""A stand-in for OPA's REST API, because no OPA binary can run on these machines.

It stores what the OPA engine pushes (policies by id, data documents by path) and answers
``POST /v1/data/<path>`` by evaluating ``data.<path>`` on regopy. It checks the engine's plumbing —
what is pushed where, the envelope, the revision marker, error handling — not OPA's own semantics;
tests against a real OPA run when ``CITYGOV_OPA_URL`` is set. ``mode`` makes it misbehave:
``down`` (HTTP 500), ``slow`` (sleeps), ``garbage`` (not JSON), ``undefined`` (no result),
``amnesia`` (forgets everything, as a restarted OPA does).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from governance.policy.embedded import CompiledPolicies, compile_modules
from governance.policy.errors import PolicyBundleError


class FakeOpa:
    def __init__(self) -> None:
        self.policies: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self.mode = "ok"
        self.slow_seconds = 1.0
        self.queries = 0
        self.puts = 0
        self._compiled: dict[str, CompiledPolicies] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.policies.clear()
            self.data.clear()
            self._compiled.clear()

    def evaluate(self, path: str, document: Any) -> tuple[bool, Any]:
        with self._lock:
            compiled = self._compiled.get(path)
            if compiled is None:
                compiled = compile_modules(self.policies, self.data, [path])
                self._compiled[path] = compiled
            value = compiled.query(path, document)
        return value is not None, value

    def set_data(self, path: str, value: Any) -> None:
        with self._lock:
            keys = [k for k in path.split("/") if k]
            node = self.data
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = value
            self._compiled.clear()

    def set_policy(self, policy_id: str, source: str | None) -> None:
        with self._lock:
            if source is None:
                self.policies.pop(policy_id, None)
            else:
                self.policies[policy_id] = source
            self._compiled.clear()


def _handler(opa: FakeOpa) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: Any = None, raw: bytes | None = None) -> None:
            payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/policies":
                self._send(200, {"result": [{"id": k} for k in sorted(opa.policies)]})
            else:
                self._send(404, {"code": "resource_not_found", "message": self.path})

        def do_PUT(self) -> None:
            body = self._body()
            opa.puts += 1
            if self.path.startswith("/v1/policies/"):
                opa.set_policy(self.path[len("/v1/policies/"):], body.decode())
                self._send(200, {})
            elif self.path.startswith("/v1/data/"):
                opa.set_data(self.path[len("/v1/data/"):], json.loads(body))
                self._send(204)
            else:
                self._send(404, {"code": "resource_not_found", "message": self.path})

        def do_DELETE(self) -> None:
            if self.path.startswith("/v1/policies/"):
                opa.set_policy(self.path[len("/v1/policies/"):], None)
                self._send(200, {})
            else:
                self._send(404, {"code": "resource_not_found", "message": self.path})

        def do_POST(self) -> None:
            body = json.loads(self._body() or b"{}")
            opa.queries += 1
            if opa.mode == "down":
                self._send(500, {"code": "internal_error", "message": "down"})
                return
            if opa.mode == "slow":
                time.sleep(opa.slow_seconds)
            if opa.mode == "garbage":
                self._send(200, raw=b"<html>not json")
                return
            if opa.mode == "amnesia":
                opa.reset()
                opa.mode = "ok"
            if opa.mode == "undefined" or not self.path.startswith("/v1/data/"):
                self._send(200, {})
                return
            try:
                defined, value = opa.evaluate(self.path[len("/v1/data/"):], body.get("input", {}))
            except PolicyBundleError:
                self._send(200, {})  # nothing pushed yet: OPA answers undefined
                return
            self._send(200, {"result": value} if defined else {})

    return Handler


@contextmanager
def running_fake_opa() -> Iterator[tuple[FakeOpa, str]]:
    opa = FakeOpa()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(opa))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield opa, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
