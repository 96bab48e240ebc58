"""Secret files on disk (keys generated on first start): created once, atomically, mode 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_secret_file(path: Path, content: bytes) -> bool:
    """Write ``content`` to ``path`` (0600) unless it exists; two processes racing keep one. True if created.

    The bytes go to a private temporary file first and are hard-linked into place, so no reader ever
    sees a partial key and an existing key is never overwritten.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
