"""Master key rotation: after a new version is added, move everything wrapped under older versions forward.

New writes use the newest version as soon as it is configured; old rows stay readable under their own
version. ``rewrap_all`` re-wraps the stored secrets (pseudonym and receipt keys) and every live subject
data key — the encrypted values themselves never change, because the data keys do not. When it reports
nothing left on an old version and no unusable key, that version can be removed from the configuration.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from governance.protect.keyring import Keyring
from governance.protect.subject_keys import SubjectKeys
from governance.protect.tables import ProtectKey, SubjectKey


def rewrap_all(keyring: Keyring, subject_keys: SubjectKeys) -> dict[str, Any]:
    """Re-wrap stored secrets and subject keys under the current master key version; a report to show."""
    stored = keyring.rewrap()
    subjects = subject_keys.rewrap()
    return {"version": keyring.master.current, "stored_keys": stored, **subjects.as_dict(),
            "remaining": versions_in_use(keyring)}


def versions_in_use(keyring: Keyring) -> dict[int, int]:
    """Master key version → how many live wrapped keys still need it."""
    stored = ProtectKey.__table__  # type: ignore[attr-defined]
    subjects = SubjectKey.__table__  # type: ignore[attr-defined]
    counts: dict[int, int] = {}
    with keyring.engine.connect() as conn:
        for version, n in conn.execute(select(stored.c.kek_version, func.count()).group_by(stored.c.kek_version)):
            counts[int(version)] = counts.get(int(version), 0) + int(n)
        query = (
            select(subjects.c.key_version, func.count())
            .where(subjects.c.destroyed_at.is_(None))
            .group_by(subjects.c.key_version)
        )
        for version, n in conn.execute(query):
            counts[int(version)] = counts.get(int(version), 0) + int(n)
    return dict(sorted(counts.items()))
