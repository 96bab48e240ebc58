"""The PolicyEngine protocol and the fail-closed evaluation both engines share.

``decide`` never raises and never lets data through on a failure: an engine error, a timeout, an
undefined result or a result that is not exactly a decision becomes a deny whose reason says which
(``policy_engine_error``, ``policy_timeout``, ``policy_undefined``, ``policy_malformed``,
``policy_unavailable``, ``policy_revision_mismatch``) and whose ``failure`` field is set.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

import orjson
from pydantic import ValidationError

from governance.config import Settings
from governance.policy.bundle import PolicyBundle, active_bundle
from governance.policy.errors import PolicyEngineError
from governance.policy.model import Decision, PolicyInput, PolicyResult, Stage

log = logging.getLogger(__name__)


class PolicyEngine(Protocol):
    """Evaluates the stage policies of one bundle revision."""

    @property
    def name(self) -> str: ...

    @property
    def revision(self) -> str: ...

    def decide(self, policy_input: PolicyInput) -> Decision:
        """The decision for ``policy_input``; a deny (with ``failure`` set) when anything goes wrong."""
        ...


class FailClosedEngine(ABC):
    """Base of the engines: timing, failure handling and result checking in one place."""

    name: ClassVar[str]

    def __init__(self, bundle: PolicyBundle, *, timeout_ms: int = 2000) -> None:
        self.bundle = bundle
        self.timeout_s = timeout_ms / 1000

    @property
    def revision(self) -> str:
        return self.bundle.revision

    def decide(self, policy_input: PolicyInput) -> Decision:
        try:
            self._prepare()
            document = policy_input.document()
            started = time.perf_counter()
            raw = self._query(policy_input.stage, document)
            elapsed = time.perf_counter() - started
        except PolicyEngineError as exc:
            log.warning("policy engine %s failed closed (%s): %s", self.name, exc.failure, exc.detail)
            return Decision.fail_closed(self.revision, exc.failure, exc.detail)
        except Exception as exc:  # an engine bug must deny, not crash or allow
            log.exception("policy engine %s raised", self.name)
            detail = f"{type(exc).__name__} in the {self.name} engine"
            return Decision.fail_closed(self.revision, "engine_error", detail)
        if elapsed > self.timeout_s:
            detail = f"decision took {elapsed * 1000:.0f} ms, over the {self.timeout_s * 1000:.0f} ms limit"
            log.warning("policy engine %s: %s", self.name, detail)
            return Decision.fail_closed(self.revision, "timeout", detail)
        return parse_result(raw, self.revision, policy_input.stage)

    def _prepare(self) -> None:  # noqa: B027 - optional hook, most engines need nothing here
        """Work done before the timed query (compiling, publishing); raise PolicyEngineError on failure."""

    @abstractmethod
    def _query(self, stage: Stage, document: dict[str, Any]) -> Any:
        """The raw value of ``data.citygov.<stage>.decision``; ``None`` when undefined."""


def parse_result(raw: Any, revision: str, stage: Stage) -> Decision:
    """Check a raw policy result; anything but a well-formed decision is a deny."""
    if raw is None:
        return Decision.fail_closed(revision, "undefined", f"the {stage.value} policy gave no decision")
    try:
        # strict: "yes" is not true and "10" is not 10 — a policy returns exactly the decision shape
        result = PolicyResult.model_validate_json(orjson.dumps(raw), strict=True)
    except (ValidationError, TypeError) as exc:
        if not isinstance(exc, ValidationError):
            return Decision.fail_closed(revision, "malformed", f"{stage.value} decision is not JSON data")
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "decision"
        return Decision.fail_closed(revision, "malformed", f"{stage.value} decision: {where}: {first['msg']}")
    if not result.allow and not result.reasons:
        return Decision.fail_closed(revision, "malformed", f"{stage.value} decision denies without a reason")
    return Decision.from_result(result, revision)


def make_engine(settings: Settings, bundle: PolicyBundle | None = None) -> FailClosedEngine:
    """The engine ``CITYGOV_POLICY_ENGINE`` selects, over ``bundle`` (default: the active bundle)."""
    bundle = bundle or active_bundle(settings)
    if settings.policy_engine == "opa":
        from governance.policy.opa import OpaEngine

        if not settings.opa_url:
            from governance.errors import ConfigurationError

            raise ConfigurationError("CITYGOV_POLICY_ENGINE=opa needs CITYGOV_OPA_URL (e.g. http://127.0.0.1:8181)")
        return OpaEngine(bundle, settings.opa_url, timeout_ms=settings.policy_timeout_ms)
    from governance.policy.embedded import EmbeddedEngine

    return EmbeddedEngine(bundle, timeout_ms=settings.policy_timeout_ms)
