"""The agreements register: validated, audited changes that become policy revisions."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from governance.audit.query import EntryFilter, find_entries
from governance.config import Settings
from governance.errors import InvalidRequestError, NotFoundError
from governance.policy.bundle import AGREEMENTS_DOCUMENT, BundleStore, active_bundle, load_folder
from governance.sharing.agreements import AgreementRegistry
from tests.governance.sharing.conftest import terms


def audit_entries(engine: Engine, action: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [e.fields for e in find_entries(conn, EntryFilter(action=action))]


def test_an_added_agreement_is_in_the_bundle_and_a_new_revision(registry: AgreementRegistry, db: Engine,
                                                                settings: Settings) -> None:
    folder = load_folder()
    view = registry.add(terms("dsa-t-1", quota_per_day=5, epsilon_budget=2.0), actor="cli:tester")
    assert (view.status, view.source, view.terms.quota_per_day) == ("active", "register", 5)
    bundle = active_bundle(settings, agreements=registry.overlay())
    assert bundle.revision != folder.revision
    agreements = bundle.data["city"]["agreements"]
    assert agreements["dsa-t-1"]["recipient"] == "stats-office"
    assert "quota_per_day" not in agreements["dsa-t-1"]  # the policy document only: the sharing layer's terms stay out
    assert set(agreements) >= {"dsa-2026-001", "dsa-2026-004", "dsa-t-1"}
    # the change is audited with the revision it makes, and that revision is stored for replay
    [entry] = audit_entries(db, "agreement.add")
    assert entry["policy_revision"] == bundle.revision and entry["actor"] == "cli:tester"
    assert entry["refs"]["agreement"] == "dsa-t-1" and entry["refs"]["epsilon_budget"] == 2.0
    assert BundleStore.for_settings(settings).load(bundle.revision).revision == bundle.revision


def test_equal_registers_give_equal_revisions(registry: AgreementRegistry, settings: Settings) -> None:
    assert active_bundle(settings, agreements={}).revision == load_folder().revision
    registry.add(terms("dsa-t-2"), actor="t")
    first = active_bundle(settings, agreements=registry.overlay()).revision
    assert active_bundle(settings, agreements=registry.overlay()).revision == first


def test_revoking_removes_the_agreement_and_its_id_is_never_reused(registry: AgreementRegistry, db: Engine,
                                                                   settings: Settings) -> None:
    registry.add(terms("dsa-t-3"), actor="t")
    revoked = registry.revoke("dsa-t-3", actor="t")
    assert revoked.status == "revoked" and revoked.revoked_at is not None
    assert "dsa-t-3" not in active_bundle(settings, agreements=registry.overlay()).data["city"]["agreements"]
    with pytest.raises(InvalidRequestError, match="never reused"):
        registry.add(terms("dsa-t-3"), actor="t", replace=True)
    with pytest.raises(InvalidRequestError, match="already revoked"):
        registry.revoke("dsa-t-3", actor="t")
    assert [v.id for v in registry.list(include_revoked=True) if v.status == "revoked"] == ["dsa-t-3"]
    assert "dsa-t-3" not in [v.id for v in registry.list()]
    assert len(audit_entries(db, "agreement.revoke")) == 1


def test_a_folder_agreement_can_be_revoked_and_replaced(registry: AgreementRegistry, settings: Settings) -> None:
    assert registry.get("dsa-2026-003").source == "policies"
    with pytest.raises(InvalidRequestError, match="policies folder"):
        registry.add(terms("dsa-2026-001"), actor="t")
    replaced = registry.add(terms("dsa-2026-001", recipient="university-mobility-lab", quota_per_day=3),
                            actor="t", replace=True)
    assert replaced.source == "register" and replaced.terms.quota_per_day == 3
    registry.revoke("dsa-2026-003", actor="t")
    city = active_bundle(settings, agreements=registry.overlay()).data["city"]
    assert "dsa-2026-003" not in city["agreements"]
    assert city["agreements"]["dsa-2026-001"]["fields"] == ["id", "type", "location", "intensity", "dateObserved"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"provider": "no-such-department"}, "unknown department"),
    ({"datasets": ["lighting.nothing"]}, "unknown dataset"),
    ({"purposes": ["world.domination"]}, "unknown purpose"),
])
def test_agreements_that_do_not_fit_the_policy_documents_are_refused(registry: AgreementRegistry,
                                                                    changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        registry.add(terms("dsa-t-bad", **changes), actor="t")
    assert registry.find("dsa-t-bad") is None


@pytest.mark.parametrize(("changes", "message"), [
    ({"valid_until": "2025-01-01T00:00:00Z"}, "after valid_from"),
    ({"valid_from": "2026-01-01T00:00:00"}, "timezone"),
    ({"obligations": [{"kind": "teleport"}]}, "obligations"),
    ({"obligations": [{"kind": "k_anonymity", "k": 1, "quasi_identifiers": ["location"]}]}, "obligations"),
    ({"fields": ["id", "id"]}, "unique"),
    ({"fields": ["x'); DROP TABLE entity; --"]}, "fields"),
    ({"recipient": "a b"}, "recipient"),
    ({"quota_per_day": 0}, "quota_per_day"),
    ({"epsilon_budget": -1}, "epsilon_budget"),
    ({"id": "../../etc/passwd"}, "id"),
])
def test_malformed_agreements_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        terms("dsa-t-bad", **changes)


def test_unknown_agreements_are_not_found(registry: AgreementRegistry) -> None:
    with pytest.raises(NotFoundError):
        registry.get("dsa-none")
    with pytest.raises(NotFoundError):
        registry.revoke("dsa-none", actor="t")


def test_the_overlaid_document_is_canonical_json(registry: AgreementRegistry, settings: Settings) -> None:
    registry.add(terms("dsa-t-4"), actor="t")
    bundle = active_bundle(settings, agreements=registry.overlay())
    raw = bundle.files[AGREEMENTS_DOCUMENT]
    assert orjson.loads(raw)["agreements"]["dsa-t-4"]["valid_from"] == "2026-01-01T00:00:00Z"
    assert b"\n" not in raw and b": " not in raw
