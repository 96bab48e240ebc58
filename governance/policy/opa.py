"""The OPA server engine: the same bundle pushed to an OPA server and queried over its REST API.

Publishing (``opa-python-client``): every Rego module under the policy id ``citygov/<path>``, the data
document at ``data.city``, a generated envelope module, and last the marker ``data.citygov_bundle``
holding the revision. Policies of an older revision that this one no longer has are deleted.

A query reads ``data.citygov_envelope.<stage>``, which returns the decision *and* the revision marker
from the same snapshot of OPA's store, so a decision made by anything but this engine's revision (say
another process published a different one) is a ``policy_revision_mismatch`` deny, never silently
attributed to the wrong revision. One publisher per OPA server at a time is assumed.

After OPA was unreachable or too slow, decisions are denied at once for ``RETRY_AFTER_S`` seconds rather
than each waiting for its own timeout; a restarted OPA (undefined answers) is published to again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlparse

import requests
from opa_client import OpaClient

from governance.errors import ConfigurationError
from governance.policy.bundle import DATA_ROOT, PolicyBundle
from governance.policy.engine import FailClosedEngine
from governance.policy.errors import PolicyEngineError
from governance.policy.model import Stage

log = logging.getLogger(__name__)

POLICY_PREFIX = "citygov/"
ENVELOPE_ID = "citygov/_envelope.rego"
ENVELOPE_PACKAGE = "citygov_envelope"
MARKER = "citygov_bundle"
RETRY_AFTER_S = 5.0
"""After OPA was unreachable or too slow, decisions fail closed at once for this long (no stalls)."""


def envelope_module() -> str:
    rules = "\n".join(
        f'{stage.value} := {{"revision": data.{MARKER}.revision, "decision": data.citygov.{stage.value}.decision}}'
        for stage in Stage
    )
    return f"package {ENVELOPE_PACKAGE}\n\nimport rego.v1\n\n{rules}\n"


def client_for(url: str, *, timeout_s: float) -> OpaClient:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(f"CITYGOV_OPA_URL must be http(s)://host:port, not {url!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 8181)
    return OpaClient(host=parsed.hostname, port=port, ssl=parsed.scheme == "https", timeout=timeout_s, retries=0)


class OpaEngine(FailClosedEngine):
    """Decides on an OPA server. Publishes its bundle on first use (and again after a failed publish)."""

    name = "opa"

    def __init__(self, bundle: PolicyBundle, url: str, *, timeout_ms: int = 2000) -> None:
        super().__init__(bundle, timeout_ms=timeout_ms)
        self.url = url
        self._client = client_for(url, timeout_s=timeout_ms / 1000)
        self._published = False
        self._lock = threading.Lock()
        self._down_until = 0.0

    def publish(self) -> None:
        """Push modules, data, envelope and revision marker; raise PolicyEngineError when OPA refuses."""
        modules = self.bundle.modules
        wanted = {POLICY_PREFIX + path for path in modules} | {ENVELOPE_ID}
        try:
            for path, source in sorted(modules.items()):
                self._client.update_policy_from_string(source, POLICY_PREFIX + path, rego_compat=False)
            self._client.update_or_create_data(dict(self.bundle.data[DATA_ROOT]), DATA_ROOT)
            self._client.update_policy_from_string(envelope_module(), ENVELOPE_ID, rego_compat=False)
            for stale in self._client.get_policies_list():
                if stale.startswith(POLICY_PREFIX) and stale not in wanted:
                    self._client.delete_policy(stale)
            self._client.update_or_create_data({"revision": self.revision}, MARKER)
        except requests.Timeout as exc:
            raise PolicyEngineError("timeout", f"OPA at {self.url} did not answer while publishing") from exc
        except requests.RequestException as exc:
            raise PolicyEngineError("unavailable", f"OPA at {self.url} unreachable ({type(exc).__name__})") from exc
        except Exception as exc:  # opa_client raises its own exception types for refusals
            raise PolicyEngineError("engine_error", f"OPA refused the bundle: {exc}") from exc
        self._published = True
        log.info("published policy revision %s to OPA at %s", self.bundle.short, self.url)

    def _prepare(self) -> None:
        if time.monotonic() < self._down_until:
            raise PolicyEngineError("unavailable", f"OPA at {self.url} failed moments ago; not asking again yet")
        if self._published:
            return
        with self._lock:
            if not self._published:
                try:
                    self.publish()
                except PolicyEngineError as exc:
                    self._note_down(exc)
                    raise

    def _note_down(self, exc: PolicyEngineError) -> None:
        if exc.failure in ("unavailable", "timeout"):
            self._down_until = time.monotonic() + RETRY_AFTER_S

    def _query(self, stage: Stage, document: dict[str, Any]) -> Any:
        try:
            return self._envelope(stage, document)
        except PolicyEngineError as exc:
            self._note_down(exc)
            raise

    def _envelope(self, stage: Stage, document: dict[str, Any]) -> Any:
        try:
            answer = self._client.query_rule(input_data=document, package_path=ENVELOPE_PACKAGE,
                                             rule_name=stage.value)
        except requests.Timeout as exc:
            raise PolicyEngineError("timeout", f"OPA at {self.url} did not answer in time") from exc
        except requests.JSONDecodeError as exc:
            raise PolicyEngineError("malformed", "OPA's answer is not JSON") from exc
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "an HTTP error"
            raise PolicyEngineError("engine_error", f"OPA answered {status}") from exc
        except requests.RequestException as exc:
            self._published = False  # a restarted OPA has lost what was pushed: publish again next time
            raise PolicyEngineError("unavailable", f"OPA at {self.url} unreachable ({type(exc).__name__})") from exc
        if not isinstance(answer, dict):
            raise PolicyEngineError("malformed", "OPA's answer is not a JSON object")
        if "result" not in answer:
            self._published = False
            return None
        envelope = answer["result"]
        if not isinstance(envelope, dict):
            raise PolicyEngineError("malformed", "OPA's envelope is not an object")
        served = envelope.get("revision")
        if served != self.revision:
            raise PolicyEngineError(
                "revision_mismatch", f"OPA serves revision {str(served)[:12]}, this engine holds {self.bundle.short}"
            )
        return envelope.get("decision")
