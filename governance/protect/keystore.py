"""The subject keystore: one 32-byte secret per data subject, in files outside the database.

Every subject's data key is wrapped under a key derived from the master key *and* this secret, so the
wrapped key in ``subject_key`` — and every copy or backup of the database that holds it — is useless
once the secret is gone. Deleting the secret is the erasure (crypto-shredding).

The folder must therefore live apart from the database and out of its backups (see docs/protection.md):
a backup of the keystore taken before an erasure would undo it. One file a subject (``psn_v1_<b32>.key``,
mode 0600) makes creation atomic across processes (the first ``link`` wins, the others read its file)
and deletion a plain ``unlink``, after overwriting the bytes in place.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from governance.config import Settings
from governance.protect.errors import KeyConfigurationError, ProtectionError
from governance.protect.masterkey import KEYS_DIR
from governance.protect.pseudonym import is_pseudonym

SECRET_BYTES = 32


class SubjectKeystore:
    """Per-subject secrets as files in one folder (mode 0700)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def from_settings(cls, settings: Settings) -> SubjectKeystore:
        return cls(settings.keystore_dir or settings.data_dir / KEYS_DIR / "subjects")

    def __repr__(self) -> str:
        return f"SubjectKeystore({str(self.folder)!r})"

    def path(self, subject: str) -> Path:
        if not is_pseudonym(subject):
            raise ProtectionError("the keystore is keyed by pseudonyms (psn:v1:...)")
        return self.folder / (subject.replace(":", "_") + ".key")

    def exists(self, subject: str) -> bool:
        """Whether the subject's secret file is there (one ``stat``; for a batch's many subjects)."""
        if not is_pseudonym(subject):
            raise ProtectionError("the keystore is keyed by pseudonyms (psn:v1:...)")
        return os.path.exists(os.path.join(self.folder, subject.replace(":", "_") + ".key"))

    def get(self, subject: str) -> bytes | None:
        """The subject's secret, or None if there is none (never created, or erased)."""
        path = self.path(subject)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyConfigurationError(f"cannot read the subject keystore {self.folder}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if mode & 0o077:
                raise KeyConfigurationError(
                    f"{path} is readable by others (mode {mode & 0o777:o}); run `chmod -R go-rwx {self.folder}`"
                )
            secret = handle.read(SECRET_BYTES + 1)
        if len(secret) != SECRET_BYTES:
            return None  # a half-written or overwritten file: treated as no secret (fail closed)
        return secret

    def get_or_create(self, subject: str) -> bytes:
        """The subject's secret, created on first use; racing processes all end up with the first one."""
        found = self.get(subject)
        if found is not None:
            return found
        path = self.path(subject)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(SECRET_BYTES))
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, path)
                _fsync_dir(self.folder)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
        found = self.get(subject)
        if found is None:
            raise ProtectionError("the subject's secret could not be created")
        return found

    def destroy(self, subject: str) -> bool:
        """Overwrite and delete the subject's secret. True if there was one. Idempotent."""
        path = self.path(subject)
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            return False
        try:
            os.write(fd, b"\x00" * SECRET_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)
        _fsync_dir(self.folder)
        return True


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
