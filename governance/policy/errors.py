"""Policy errors, as subclasses of the one citygov exception tree.

A decision never raises one of these to let data through: engines turn their failures into a deny
(see :mod:`governance.policy.engine`). These errors stop an operation that cannot be governed safely.
"""

from __future__ import annotations

from governance.errors import CitygovError, ConfigurationError


class PolicyError(CitygovError):
    """Base of the policy errors."""

    code = "policy_error"


class PolicyBundleError(ConfigurationError):
    """The policies folder or a stored bundle cannot be loaded (syntax, lint, data documents, integrity)."""

    code = "policy_bundle_error"


class UnknownRevisionError(PolicyBundleError):
    """No stored bundle has that revision."""

    code = "unknown_policy_revision"


class PolicyEngineError(PolicyError):
    """The engine failed to evaluate (compile error, server down, bad answer). Callers see a deny instead."""

    code = "policy_engine_error"

    def __init__(self, failure: str, detail: str) -> None:
        super().__init__(f"{failure}: {detail}")
        self.failure = failure
        self.detail = detail


class ObligationError(PolicyError):
    """An obligation cannot be carried out; the data it governs must not be released."""

    code = "obligation_error"


class UnknownObligationError(ObligationError):
    """An obligation of a kind this code does not know: refused, never skipped."""

    code = "unknown_obligation"


class ObligationNotEnforcedError(ObligationError):
    """An obligation was left to a later layer that did not say it carries it out."""

    code = "obligation_not_enforced"
