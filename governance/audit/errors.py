"""Errors of the audit log, under the project's one exception tree."""

from __future__ import annotations

from governance.errors import CitygovError, ConfigurationError, NotFoundError


class AuditError(CitygovError):
    """The audit log refused an operation."""

    code = "audit_error"


class InvalidAuditEventError(AuditError):
    """An event cannot be written: a field is missing, too long, or not representable in the log."""

    code = "invalid_audit_event"


class AuditKeyError(ConfigurationError):
    """A log key is missing, unreadable, too widely readable, or not the key this log was started with."""

    code = "audit_key_error"


class AuditRangeError(NotFoundError):
    """A sequence number or tree size outside the log (or a proof between sizes that do not exist)."""

    code = "audit_range"


class ProofError(AuditError):
    """A Merkle proof does not verify (or is malformed)."""

    code = "proof_invalid"


class VerificationError(AuditError):
    """The log, a checkpoint or a bundle failed verification: it was changed, truncated or forked.

    ``seq`` names the first bad entry when one can be named; the message says what is wrong.
    """

    code = "verification_failed"

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq
