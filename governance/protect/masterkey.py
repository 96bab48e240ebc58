"""The master key (key-encryption key, KEK): versioned, from the environment or a key file, never in the database.

``CITYGOV_MASTER_KEY`` holds base64 of 32 bytes (version 1), or versioned entries ``v2:<b64>,v1:<b64>``;
``CITYGOV_MASTER_KEY_FILE`` names a 0600 file with one ``v<N>:<b64>`` entry a line. The highest version
wraps everything new; older versions stay to unwrap what they wrapped until re-wrapping moves it forward.
Outside dev mode one of the two is required. In dev mode a key is generated under ``<data_dir>/keys/``
and a warning says so, once per process.

The KEK is never used directly: every use derives its own key with HKDF-SHA256 under a distinct label.
The raw bytes never leave this module; callers get ``seal``/``open`` and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from governance.config import Settings
from governance.keyfiles import create_secret_file
from governance.protect.errors import DecryptionError, KeyConfigurationError

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
KEYS_DIR = "keys"
DEV_KEY_FILE = "master.key"
_HKDF_SALT = b"citygov/kek/v1"
_ENTRY = re.compile(r"^v?(\d{1,6}):(.+)$")
_URLSAFE = str.maketrans("-_", "+/")
_warned: set[str] = set()


class MasterKeys:
    """The versioned key-encryption keys. Refuses an empty list; shows versions, never bytes."""

    __slots__ = ("_aeads", "_keys", "source")

    def __init__(self, keys: Mapping[int, bytes], *, source: str) -> None:
        if not keys:
            raise KeyConfigurationError(f"the master key list from {source} is empty: give at least one key")
        for version, key in keys.items():
            if version < 1:
                raise KeyConfigurationError(f"master key versions start at 1 ({source})")
            if len(key) != KEY_BYTES:
                raise KeyConfigurationError(f"master key v{version} from {source} is not {KEY_BYTES} bytes")
        self._keys = dict(keys)
        self._aeads: dict[tuple[int, str], AESGCM] = {}
        self.source = source

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))

    @property
    def current(self) -> int:
        """The version that wraps everything new."""
        return max(self._keys)

    def __repr__(self) -> str:
        return f"MasterKeys(versions={list(self.versions)}, current={self.current}, source={self.source!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("master keys cannot be pickled")

    def seal(
        self, plaintext: bytes, aad: bytes, *, label: str, secret: bytes = b"", version: int | None = None
    ) -> tuple[int, bytes]:
        """Encrypt ``plaintext`` under the key derived for ``label`` (and ``secret``, if any): (version, blob).

        The blob is nonce (12 bytes) ‖ AES-256-GCM ciphertext and tag. A ``secret`` enters the derivation
        as key material, so the blob can only be opened by someone holding both the KEK and the secret.
        """
        version = self.current if version is None else version
        nonce = secrets.token_bytes(NONCE_BYTES)
        return version, nonce + self._aead(version, label, secret).encrypt(nonce, plaintext, aad)

    def open(self, version: int, blob: bytes, aad: bytes, *, label: str, secret: bytes = b"") -> bytes:
        """Reverse ``seal``; any failure (unknown version, tampering, wrong secret) is one ``DecryptionError``."""
        if version not in self._keys or len(blob) < NONCE_BYTES + 16:
            raise DecryptionError
        try:
            return self._aead(version, label, secret).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise DecryptionError from None

    def _aead(self, version: int, label: str, secret: bytes) -> AESGCM:
        if not secret and (cached := self._aeads.get((version, label))) is not None:
            return cached
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_HKDF_SALT, info=label.encode("utf-8"))
        aead = AESGCM(hkdf.derive(self._keys[version] + secret))
        if not secret:
            self._aeads[(version, label)] = aead
        return aead

    @classmethod
    def parse(cls, text: str, *, source: str) -> MasterKeys:
        """Read ``<b64>`` (version 1) or ``v<N>:<b64>`` entries separated by commas or new lines; ``#`` comments."""
        text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
        entries = [e for e in re.split(r"[,\s]+", text.strip()) if e]
        if len(entries) == 1 and ":" not in entries[0]:
            return cls({1: _decode(entries[0], source, 1)}, source=source)
        keys: dict[int, bytes] = {}
        for number, entry in enumerate(entries, start=1):
            match = _ENTRY.match(entry)
            if match is None:
                raise KeyConfigurationError(f"{source}: entry {number} is not 'v<N>:<base64 of 32 bytes>'")
            version = int(match.group(1))
            if version in keys:
                raise KeyConfigurationError(f"{source}: master key v{version} is given twice")
            keys[version] = _decode(match.group(2), source, number)
        return cls(keys, source=source)

    @classmethod
    def from_settings(cls, settings: Settings) -> MasterKeys:
        """The configured master keys; outside dev mode a missing key is an error, never a generated one."""
        if settings.master_key is not None and settings.master_key_file is not None:
            raise KeyConfigurationError("set CITYGOV_MASTER_KEY or CITYGOV_MASTER_KEY_FILE, not both")
        if settings.master_key is not None:
            return cls.parse(settings.master_key.get_secret_value(), source="CITYGOV_MASTER_KEY")
        if settings.master_key_file is not None:
            path = settings.master_key_file
            return cls.parse(_read_secret(path), source=str(path))
        if not settings.dev_mode:
            raise KeyConfigurationError(
                "no master key: set CITYGOV_MASTER_KEY (base64 of 32 bytes) or CITYGOV_MASTER_KEY_FILE; "
                "a key is only generated in dev mode (CITYGOV_DEV_MODE=true)"
            )
        path = dev_key_path(settings.data_dir)
        created = create_secret_file(path, f"v1:{_new_key_b64()}\n".encode("ascii"))
        if str(path) not in _warned:
            _warned.add(str(path))
            log.warning(
                "DEV MODE: %s master key at %s. Anyone who can read that file can decrypt personal data. "
                "In production set CITYGOV_MASTER_KEY or CITYGOV_MASTER_KEY_FILE and CITYGOV_DEV_MODE=false.",
                "generated a" if created else "using the generated",
                path,
                extra={"key_file": str(path), "dev_mode": True},
            )
        return cls.parse(_read_secret(path), source=str(path))


def dev_key_path(data_dir: Path) -> Path:
    return data_dir / KEYS_DIR / DEV_KEY_FILE


def new_key_entry(version: int) -> str:
    """A fresh ``v<N>:<b64>`` entry, for an operator adding a version to ``CITYGOV_MASTER_KEY``."""
    return f"v{version}:{_new_key_b64()}"


def add_key_version(path: Path) -> int:
    """Rotate a key file: append a new, highest version (atomic rewrite, 0600). Returns the new version.

    New writes use it at once; run the re-wrap (``governance.protect.rotation.rewrap_all``) to move old
    keys forward, after which the old version can be removed from the file.
    """
    keys = MasterKeys.parse(_read_secret(path), source=str(path))
    version = keys.current + 1
    text = _read_secret(path).rstrip("\n") + f"\n{new_key_entry(version)}\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return version


def _new_key_b64() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _decode(text: str, source: str, number: int) -> bytes:
    padded = text.translate(_URLSAFE) + "=" * (-len(text) % 4)
    with contextlib.suppress(binascii.Error, ValueError):
        key = base64.b64decode(padded.encode("ascii", "replace"), validate=True)
        if len(key) == KEY_BYTES:
            return key
    raise KeyConfigurationError(f"{source}: entry {number} is not base64 of {KEY_BYTES} bytes")


def _read_secret(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyConfigurationError(f"cannot read master key file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyConfigurationError(f"{path} is readable by others (mode {mode & 0o777:o}); run `chmod 600 {path}`")
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise KeyConfigurationError(f"cannot read master key file {path}") from None


def describe(keys: MasterKeys) -> dict[str, Any]:
    """What may be shown about the master keys: versions and where they came from."""
    return {"versions": list(keys.versions), "current": keys.current, "source": keys.source}
