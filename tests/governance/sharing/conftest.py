"""Fixtures of the sharing tests: a query service over the test store, stored entities, consents, agreements."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from governance.anonymize import tables as _budget_tables  # noqa: F401  (registers the ledger table)
from governance.catalog import default_catalog
from governance.config import Settings
from governance.consent.models import ConsentGrant
from governance.consent.registry import ConsentRegistry
from governance.ingest.pipeline import observed_at_of
from governance.protect.fieldcrypt import FieldProtector, ProtectionPlan
from governance.protect.keyring import Keyring
from governance.sharing import tables as _sharing_tables  # noqa: F401  (registers the register's tables)
from governance.sharing.agreements import AgreementRegistry, AgreementTerms, parse_terms
from governance.sharing.query import QueryService
from governance.store.db import init_schema
from governance.store.entities import add_entities
from tests.conftest import FIXED_NOW
from tests.governance.protect.support import Clock

CATALOG = default_catalog()


@pytest.fixture
def clock() -> Clock:
    return Clock(FIXED_NOW)


@pytest.fixture
def db(engine: Engine) -> Engine:
    init_schema(engine)  # the sharing and ledger tables, registered by the imports above
    return engine


@pytest.fixture
def service(settings: Settings, db: Engine, clock: Clock) -> QueryService:
    return QueryService.from_settings(settings, db, clock=clock)


@pytest.fixture
def registry(service: QueryService) -> AgreementRegistry:
    return service.agreements


@pytest.fixture
def protector(settings: Settings, db: Engine, clock: Clock) -> FieldProtector:
    return FieldProtector.from_settings(settings, db, clock=clock)


@pytest.fixture
def consents(settings: Settings, db: Engine, clock: Clock) -> ConsentRegistry:
    return ConsentRegistry(db, Keyring.from_settings(settings, db, clock=clock), clock=clock)


def store(engine: Engine, entities: Sequence[dict[str, Any]], protector: FieldProtector | None = None,
          retain_until: datetime | None = None, *, sealed_time: bool = False) -> list[dict[str, Any]]:
    """Write entities as the pipeline does: care types through the field protector (pseudonyms, sealed fields).

    ``sealed_time``: as rows written before the observation time was left in the clear (it sealed too)."""
    rows: list[dict[str, Any]] = []
    by_type: dict[str, list[dict[str, Any]]] = {}
    for entity in entities:
        by_type.setdefault(entity["type"], []).append(entity)
    written: list[dict[str, Any]] = []
    for entity_type, group in by_type.items():
        schema = CATALOG.get(entity_type)
        times = [observed_at_of(e, schema.observed_at) for e in group]
        plan = ProtectionPlan.from_schema(schema)
        if plan is not None and sealed_time and schema.observed_at:
            plan = ProtectionPlan(subject_property=plan.subject_property, encrypt=plan.encrypt | {schema.observed_at},
                                  pseudonymize=plan.pseudonymize)
        if plan is not None:
            assert protector is not None, "care entities are stored protected"
            group = protector.protect(group, plan, observed_at=times)
        for entity, observed in zip(group, times, strict=True):
            written.append(entity)
            raw = hashlib.sha256(repr(entity).encode()).hexdigest()
            rows.append({
                "entity_id": entity["id"], "entity_type": entity_type, "dataset": schema.dataset,
                "observed_at": observed, "data": entity, "adapter": "test", "adapter_version": "1",
                "source": "test", "received_at": FIXED_NOW, "stored_at": FIXED_NOW, "raw_sha256": raw,
                "message_fingerprint": raw, "removed_fields": [],
                "subject": entity.get(plan.subject_property) if plan else None,
                "retain_until": retain_until, "policy_revision": None,
            })
    with engine.begin() as conn:
        add_entities(conn, rows)
    return written


def traffic(n: int, *, start: datetime = FIXED_NOW - timedelta(days=1), lon: float = 2.17, lat: float = 41.38,
            step: float = 0.001) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        begin = start + timedelta(minutes=15 * i)
        out.append({
            "id": f"urn:ngsi-ld:TrafficFlowObserved:tf-{i}", "type": "TrafficFlowObserved",
            "location": {"type": "Point", "coordinates": [round(lon + step * (i % 10), 6),
                                                           round(lat + step * (i // 10), 6)]},
            "dateObserved": begin.isoformat().replace("+00:00", "Z"),
            "dateObservedFrom": begin.isoformat().replace("+00:00", "Z"),
            "dateObservedTo": (begin + timedelta(minutes=15)).isoformat().replace("+00:00", "Z"),
            "intensity": 100 + i, "refRoadSegment": "urn:ngsi-ld:RoadSegment:rs-1",
        })
    return out


def observation(n: int, resident: int, value: float = 70.0) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:ResidentObservation:H-{resident}-heartRate-{n}", "type": "ResidentObservation",
        "observationType": "heartRate", "numValue": value, "unitCode": "5K", "confidence": 0.9,
        "refResident": f"urn:ngsi-ld:Person:R-{resident}", "refDevice": f"urn:ngsi-ld:Device:H-{resident}",
        "dateObserved": (FIXED_NOW - timedelta(hours=2, minutes=n)).isoformat().replace("+00:00", "Z"),
    }


def alert(n: int, resident: int, *, day: int, lon: float, lat: float, sub: str = "fallenPatient") -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Alert:A-{n}", "type": "Alert", "category": "health", "subCategory": sub,
        "severity": "high", "dateIssued": f"2026-11-{day:02d}T03:{n % 60:02d}:00Z",
        "location": {"type": "Point", "coordinates": [lon, lat]}, "refResident": f"urn:ngsi-ld:Person:R-{resident}",
        "alertSource": "urn:ngsi-ld:Device:H-1", "description": "fell in the kitchen",
    }


def grant(consents: ConsentRegistry, resident: int, *recipients: str, purpose: str = "care.monitoring") -> None:
    consents.grant(ConsentGrant(
        subject_id=f"urn:ngsi-ld:Person:R-{resident}", controller="social-care", purposes=[purpose],
        recipients=list(recipients), legal_basis="explicit-consent", collection_method="form",
        special_categories=["health"], valid_from=FIXED_NOW - timedelta(days=30),
    ), actor="test")


def terms(agreement_id: str, **changes: Any) -> AgreementTerms:
    """A register agreement: traffic flows for a statistics office, unless ``changes`` say otherwise."""
    base: dict[str, Any] = {
        "id": agreement_id, "title": "Traffic counts for the statistics office", "provider": "energy",
        "recipient": "stats-office", "recipient_kind": "external", "datasets": ["lighting.traffic-flow"],
        "purposes": ["research.mobility"], "fields": ["id", "type", "location", "intensity", "dateObserved"],
        "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z", "basis": "public-task",
        "obligations": [],
    }
    base.update(changes)
    return parse_terms(base)
