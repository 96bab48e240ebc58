"""Sharing rows whose observation time was sealed (written before) and rows where it is plain (written since)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from governance.consent.registry import ConsentRegistry
from governance.errors import StorageError
from governance.protect.fieldcrypt import FieldProtector, is_sealed
from governance.sharing.query import QueryRequest, QueryService, Requester
from governance.store.tables import EntityRecord
from tests.governance.sharing.conftest import grant, observation, store

GP = Requester("gp-practice-centro", "external")
ENTITY = EntityRecord.__table__  # type: ignore[attr-defined]
FIELDS = ["id", "type", "numValue", "refResident", "dateObserved"]


def _ask() -> QueryRequest:
    return QueryRequest.model_validate({"dataset": "care.observation", "purpose": "care.monitoring",
                                        "agreement": "dsa-2026-004", "fields": FIELDS})


def _store_old_and_new(db: Engine, protector: FieldProtector) -> list[dict[str, Any]]:
    old = [observation(n, resident, 60.0 + resident) for resident in (1, 2) for n in (0, 1)]
    new = [observation(n, resident, 60.0 + resident) for resident in (1, 2) for n in (2, 3)]
    written_old = store(db, old, protector, sealed_time=True)
    written_new = store(db, new, protector)
    assert all(is_sealed(e["dateObserved"]) for e in written_old)
    assert not any(is_sealed(e["dateObserved"]) for e in written_new)
    return old + new


def test_old_sealed_and_new_plain_observation_times_are_shared_the_same(
        service: QueryService, db: Engine, protector: FieldProtector, consents: ConsentRegistry) -> None:
    originals = _store_old_and_new(db, protector)
    grant(consents, 1, "gp-practice-centro")
    grant(consents, 2, "gp-practice-centro")
    result = service.run(GP, _ask())
    assert len(result.records) == len(originals) == 8
    assert sorted(r["dateObserved"] for r in result.records) == sorted(o["dateObserved"] for o in originals)
    assert sorted(r["numValue"] for r in result.records) == [61.0] * 4 + [62.0] * 4
    assert not any(is_sealed(v) for r in result.records for v in r.values())


@pytest.mark.parametrize("old", [True, False])
def test_a_plain_value_in_another_sealed_field_is_still_refused(
        service: QueryService, db: Engine, protector: FieldProtector, consents: ConsentRegistry, old: bool) -> None:
    originals = _store_old_and_new(db, protector)
    grant(consents, 1, "gp-practice-centro")
    grant(consents, 2, "gp-practice-centro")
    with db.begin() as conn:
        rows = conn.execute(select(ENTITY.c.pk, ENTITY.c.data).order_by(ENTITY.c.pk)).all()
        pk, data = rows[0 if old else -1]
        assert is_sealed(data["dateObserved"]) is old
        plain = {**data, "numValue": originals[0]["numValue"]}
        conn.execute(update(ENTITY).where(ENTITY.c.pk == pk).values(data=plain))
    with pytest.raises(StorageError, match="did not decrypt"):
        service.run(GP, _ask())
