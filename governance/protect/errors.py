"""Errors of the protection layer. None of them ever carries key material or plaintext."""

from __future__ import annotations

from governance.errors import CitygovError, ConfigurationError


class ProtectionError(CitygovError):
    """A value could not be protected (pseudonymized, encrypted) as asked."""

    code = "protection_error"


class KeyConfigurationError(ConfigurationError):
    """The master key is missing, malformed, too widely readable, or lacks a version the data needs."""

    code = "key_configuration"


class DecryptionError(ProtectionError):
    """A protected value cannot be decrypted: one opaque failure, whatever the cause.

    Tampering, a value moved to another row or field, a wrong or retired key and an erased subject all
    look the same to the caller, as with Fernet's ``InvalidToken``: the reason is not an oracle.
    """

    code = "decryption_failed"

    def __init__(self) -> None:
        super().__init__("a protected value cannot be decrypted")


class SubjectErasedError(ProtectionError):
    """The subject's data key was destroyed (crypto-shredded): nothing new is written under it."""

    code = "subject_erased"
