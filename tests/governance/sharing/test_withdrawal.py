"""Withdrawal of consent takes effect at once for use and sharing: a request one second later releases nothing
of the person who withdrew, while everyone else's consent still holds."""

from __future__ import annotations

from sqlalchemy import Engine

from governance.consent.models import ConsentGrant
from governance.consent.registry import ConsentRegistry
from governance.protect.fieldcrypt import FieldProtector
from governance.sharing.query import QueryRequest, QueryService, Requester
from tests.conftest import FIXED_NOW
from tests.governance.protect.support import Clock
from tests.governance.sharing.conftest import observation, store

GP = Requester("gp-practice-centro", "external")
QUERY = QueryRequest.model_validate({
    "dataset": "care.observation", "purpose": "care.monitoring", "agreement": "dsa-2026-004",
    "fields": ["id", "type", "numValue", "refResident", "dateObserved"],
})


def test_a_request_one_second_after_withdrawal_is_denied_that_persons_data(
    service: QueryService, db: Engine, protector: FieldProtector, consents: ConsentRegistry, clock: Clock
) -> None:
    store(db, [observation(n, resident, 60.0 + resident) for resident in (1, 2) for n in range(3)], protector)
    consent_ids = {}
    for resident in (1, 2):
        consent_ids[resident] = consents.grant(ConsentGrant(
            subject_id=f"urn:ngsi-ld:Person:R-{resident}", controller="social-care", purposes=["care.monitoring"],
            recipients=["gp-practice-centro"], legal_basis="explicit-consent", collection_method="form",
            special_categories=["health"], valid_from=FIXED_NOW,
        ), actor="test").consent.consent_id

    before = service.run(GP, QUERY)
    assert sorted(r["numValue"] for r in before.records) == [61.0] * 3 + [62.0] * 3

    consents.withdraw(consent_ids[1], actor="resident:R-1")
    clock.advance(seconds=1)
    after = service.run(GP, QUERY)
    assert sorted(r["numValue"] for r in after.records) == [62.0] * 3  # R-1's records are no longer released
    assert after.suppressed == 3
