"""The observation time is stored in the clear; rows written before keep it sealed and still read correctly."""

from __future__ import annotations

from typing import Any

import pytest

from governance.catalog import default_catalog
from governance.protect.errors import DecryptionError
from governance.protect.fieldcrypt import FieldProtector, ProtectionPlan, is_sealed, observation_time_fields
from tests.governance.protect.support import observation, observed

CLEAR_OK = observation_time_fields([default_catalog().get("ResidentObservation")])


def sealing_observation_time(plan: ProtectionPlan) -> ProtectionPlan:
    """The plan as it was before: the observation time sealed with the other personal fields."""
    return ProtectionPlan(subject_property=plan.subject_property, encrypt=plan.encrypt | {"dateObserved"},
                          pseudonymize=plan.pseudonymize)


def _old_and_new(protector: FieldProtector, plan: ProtectionPlan) -> tuple[list[dict[str, Any]], list[Any]]:
    old = protector.protect([observation(0), observation(1, resident="R-60344")], sealing_observation_time(plan),
                            observed_at=[observed(0), observed(1)])
    new = protector.protect([observation(2), observation(3, resident="R-60344")], plan,
                            observed_at=[observed(2), observed(3)])
    assert all(is_sealed(row["dateObserved"]) for row in old)
    assert not any(is_sealed(row["dateObserved"]) for row in new)
    return old + new, [observed(n) for n in range(4)]


def test_the_schema_observation_time_is_what_may_be_clear() -> None:
    assert {"dateObserved"} == CLEAR_OK
    assert observation_time_fields([default_catalog().get("Alert")]) == {"dateIssued"}


def test_old_sealed_and_new_plain_observation_times_read_the_same(
    protector: FieldProtector, plan: ProtectionPlan
) -> None:
    rows, times = _old_and_new(protector, plan)
    fields = sealing_observation_time(plan).encrypt
    opened = protector.reveal(rows, fields=fields, subject_property="refResident", observed_at=times,
                              clear_ok=CLEAR_OK)
    assert [o["dateObserved"] for o in opened] == [observation(n)["dateObserved"] for n in range(4)]
    assert [o["numValue"] for o in opened] == [72] * 4
    assert not any(is_sealed(v) for o in opened for v in o.values())


def test_a_plain_observation_time_is_refused_unless_the_reader_allows_it(
    protector: FieldProtector, plan: ProtectionPlan
) -> None:
    rows, times = _old_and_new(protector, plan)
    with pytest.raises(DecryptionError):
        protector.reveal(rows, fields={"dateObserved"}, subject_property="refResident", observed_at=times)


@pytest.mark.parametrize("name", ["numValue", "confidence", "observationType"])
@pytest.mark.parametrize("row", [0, 2])  # an old row and a new one
def test_a_plain_value_in_another_encrypted_field_is_still_refused(
    protector: FieldProtector, plan: ProtectionPlan, name: str, row: int
) -> None:
    rows, times = _old_and_new(protector, plan)
    rows[row] = {**rows[row], name: observation(row)[name]}  # tampered: the plaintext put back
    with pytest.raises(DecryptionError):
        protector.reveal(rows, fields=sealing_observation_time(plan).encrypt, subject_property="refResident",
                         observed_at=times, clear_ok=CLEAR_OK)


def test_a_sealed_observation_time_is_still_bound_to_its_row(protector: FieldProtector, plan: ProtectionPlan) -> None:
    rows, times = _old_and_new(protector, plan)
    rows[0] = {**rows[0], "dateObserved": rows[1]["dateObserved"]}  # moved from another row
    with pytest.raises(DecryptionError):
        protector.reveal(rows, fields={"dateObserved"}, subject_property="refResident", observed_at=times,
                         clear_ok=CLEAR_OK)


def test_plain_observation_times_need_no_key(protector: FieldProtector, plan: ProtectionPlan) -> None:
    """Rows whose only released field is a plain observation time are passed through, key or not."""
    new = protector.protect([observation(5, resident="R-99999")], plan, observed_at=[observed(5)])
    protector.shred("urn:ngsi-ld:Person:R-99999")
    [opened] = protector.reveal(new, fields={"dateObserved"}, subject_property="refResident",
                                observed_at=[observed(5)], clear_ok=CLEAR_OK)
    assert opened["dateObserved"] == observation(5)["dateObserved"]
