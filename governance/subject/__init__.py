"""Rights of the data subject: access (a full, decrypted export) and erasure (crypto-shredding and deletion).

``from governance.subject import export, erase`` (see :mod:`governance.subject.rights`).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = frozenset({"ErasureReport", "SubjectRights", "erase", "export"})


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from governance.subject import rights

        return getattr(rights, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
