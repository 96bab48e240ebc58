"""Right of access over rows whose observation time was sealed (written before) and rows where it is plain."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, select, update

from governance.catalog import default_catalog
from governance.protect.fieldcrypt import ProtectionPlan, is_sealed
from governance.subject.rights import ENTITY, SubjectRights
from tests.governance.protect.support import observation, observed
from tests.governance.retention.support import entity_row, insert
from tests.governance.subject.test_rights import RESIDENT, rights  # noqa: F401  (a fixture)

PLAN = ProtectionPlan.from_schema(default_catalog().get("ResidentObservation"))
assert PLAN is not None
OLD_PLAN = ProtectionPlan(subject_property=PLAN.subject_property, encrypt=PLAN.encrypt | {"dateObserved"},
                          pseudonymize=PLAN.pseudonymize)  # as rows were written before


def _store(rights: SubjectRights, engine: Engine) -> list[dict[str, Any]]:  # noqa: F811
    originals = [observation(n, value=60 + n) for n in range(6)]
    times = [observed(n) for n in range(6)]
    sealed = (rights.protector.protect(originals[:3], OLD_PLAN, observed_at=times[:3])
              + rights.protector.protect(originals[3:], PLAN, observed_at=times[3:]))
    assert [is_sealed(s["dateObserved"]) for s in sealed] == [True] * 3 + [False] * 3
    insert(engine, [entity_row(n, dataset="care.observation", entity_type="ResidentObservation", entity_id=s["id"],
                               observed_at=t, data=s, subject=s["refResident"], retain_until=t + timedelta(days=30))
                    for n, (s, t) in enumerate(zip(sealed, times, strict=True))])
    return originals


def test_export_opens_old_sealed_and_passes_new_plain_observation_times(
    rights: SubjectRights, engine: Engine  # noqa: F811
) -> None:
    originals = _store(rights, engine)
    entities = rights.export("R-55812", actor="clerk:anna")["entities"]
    assert len(entities) == 6 and all(e["readable"] for e in entities)
    assert [e["data"]["dateObserved"] for e in entities] == [o["dateObserved"] for o in originals]
    assert [e["data"]["numValue"] for e in entities] == [o["numValue"] for o in originals]
    assert "enc:v1:" not in orjson.dumps(entities).decode()
    assert entities[0]["data"]["refResident"] == rights.pseudonyms.of(RESIDENT)


def test_export_still_refuses_a_plain_value_in_another_sealed_field(
    rights: SubjectRights, engine: Engine  # noqa: F811
) -> None:
    originals = _store(rights, engine)
    with engine.begin() as conn:
        pk, data = conn.execute(select(ENTITY.c.pk, ENTITY.c.data).order_by(ENTITY.c.pk.desc()).limit(1)).one()
        conn.execute(update(ENTITY).where(ENTITY.c.pk == pk).values(data={**data, "numValue": 99}))
    entities = rights.export("R-55812", actor="clerk:anna")["entities"]
    # the tampered value does not open: the page is not readable and no ciphertext is handed out
    assert len(entities) == len(originals) and not all(e["readable"] for e in entities)
    assert "enc:v1:" not in orjson.dumps(entities).decode()
