"""Opening stored entities for a person entitled to see them whole (an operator's export).

The signed API never uses this: it decrypts only what a decision releases. An operator who holds the
master key and the keystore can export entities with their sealed fields opened; each such export is
one audit entry (who, which type, when).
"""

from __future__ import annotations

import getpass
from typing import Any

from sqlalchemy import Engine

from governance.audit.entries import AuditEvent
from governance.audit.log import AuditLog
from governance.catalog import SchemaCatalog, default_catalog
from governance.config import Settings
from governance.protect.fieldcrypt import FieldProtector, is_sealed


class EntityRevealer:
    """Decrypts every sealed field of stored rows, one row at a time (exports are streamed)."""

    def __init__(self, protector: FieldProtector, catalog: SchemaCatalog) -> None:
        self.protector = protector
        self.catalog = catalog

    @classmethod
    def for_export(cls, settings: Settings, engine: Engine, *, entity_type: str | None) -> EntityRevealer:
        """A revealer for an operator's export; the export is audited before anything is opened."""
        AuditLog.open(engine, settings.data_dir).append([AuditEvent(
            actor=f"operator:{getpass.getuser()}", action="entities.reveal", stage="use", decision="revealed",
            refs={"entity_type": entity_type or "*"},
        )])
        return cls(FieldProtector.from_settings(settings, engine), default_catalog())

    def reveal(self, row: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = row["data"]
        sealed = [name for name, value in data.items() if is_sealed(value)]
        if not sealed:
            return data
        subject_property = self.catalog.get(row["entity_type"]).subject_property
        if subject_property is None:
            return data
        return self.protector.reveal([data], fields=sealed, subject_property=subject_property,
                                     observed_at=[row["observed_at"]])[0]
