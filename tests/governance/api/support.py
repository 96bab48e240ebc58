"""Helpers of the API tests: a stand-in query layer, registered callers and a signing client.

``StandInQueryService`` implements the ``QueryService.run`` contract (docs: /work/notes/query-contract.md)
until governance/sharing/query.py lands: it validates its inputs, denies with reason codes, refuses
unknown datasets and returns shaped records. It is a stand-in for *another module*, not a mock of the
API's own code; the integration test with the real service is ``test_sharing_integration.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from governance.api.app import QueryBackend, create_app
from governance.api.auth import Caller
from governance.api.client import PrivateKey, RequestSigner, generate_key, public_of
from governance.api.departments import DepartmentRegistry
from governance.audit.log import AuditLog
from governance.config import Settings
from governance.errors import AccessDeniedError, InvalidRequestError, PayloadTooLargeError, QuotaExceededError
from tests.governance.protect.support import Clock

BASE = "http://testserver"
QUERY_PATH = "/v1/data/query"
QUERY_URL = BASE + QUERY_PATH
DATASETS = {"lighting.streetlight": ("id", "powerState", "dateObserved", "location"),
            "monitoring.noise": ("id", "LAeq", "dateObserved"),
            "lighting.traffic-flow": ("id", "intensity", "dateObserved")}


class StandInWhere(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None
    ids: list[str] | None = Field(default=None, max_length=500)


class StandInQuery(BaseModel):
    """The request body as the contract defines it (the subset the stand-in understands)."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(min_length=1, max_length=128)
    purpose: str = Field(min_length=1, max_length=128)
    fields: list[str] = Field(min_length=1, max_length=64)
    where: StandInWhere | None = None
    aggregate: dict[str, Any] | None = None
    format: Literal["keyvalues", "ngsi-ld"] = "keyvalues"
    agreement: str | None = None
    break_glass: bool = False
    page_size: int = Field(default=1000, ge=1, le=10_000)
    cursor: str | None = None


@dataclass(frozen=True)
class StandInRequester:
    id: str
    kind: Literal["department", "external"]
    roles: tuple[str, ...] = ()


@dataclass
class StandInResult:
    records: list[dict[str, Any]]
    next_cursor: str | None
    stage: str
    decision_id: str
    policy_revision: str
    fields: list[str]
    obligations: list[str]
    suppressed: int = 0
    epsilon_spent: float | None = None


@dataclass
class StandInQueryService:
    """Energy may read street lights for 'energy'; everything else is denied with a reason code."""

    total: int = 25
    calls: list[tuple[StandInRequester, StandInQuery]] = field(default_factory=list)

    def run(self, requester: StandInRequester, request: StandInQuery) -> StandInResult:
        self.calls.append((requester, request))
        known = DATASETS.get(request.dataset)
        if known is None:
            raise InvalidRequestError(f"unknown dataset {request.dataset!r}")
        unknown = [f for f in request.fields if f not in known]
        if unknown:
            raise InvalidRequestError(f"unknown field {unknown[0]!r}")
        if request.purpose == "quota":
            raise QuotaExceededError("quota", reasons=("agreement_quota_exhausted",), decision_id="dec-q")
        if request.page_size > 5000:
            raise PayloadTooLargeError("the result would be over 5000 records")
        if requester.id != "energy" or request.purpose != "energy":
            raise AccessDeniedError("no entitlement", reasons=("no_entitlement",), decision_id="dec-deny")
        start = int(request.cursor or 0)
        end = min(self.total, start + request.page_size)
        records = [{name: _value(name, n) for name in request.fields} for n in range(start, end)]
        stage = "sharing" if requester.kind == "external" or request.agreement else "use"
        return StandInResult(records=records, next_cursor=str(end) if end < self.total else None, stage=stage,
                             decision_id=f"dec-{start}", policy_revision="rev-standin", fields=list(request.fields),
                             obligations=["release_fields"])


def _value(name: str, n: int) -> Any:
    return {"id": f"urn:ngsi-ld:Streetlight:SL-{n}", "powerState": "on" if n % 2 else "off",
            "dateObserved": f"2026-11-20T12:{n % 60:02d}:00Z", "location": [n, n], "LAeq": 40 + n}.get(name)


def stand_in_backend(service: StandInQueryService | None = None) -> QueryBackend:
    svc = service or StandInQueryService()

    def requester(caller: Caller) -> StandInRequester:
        return StandInRequester(id=caller.name, kind=caller.kind, roles=caller.roles)

    return QueryBackend(service=svc, request_model=StandInQuery, make_requester=requester,
                        policy_revision=lambda: "rev-standin")


@dataclass
class Party:
    """A registered caller with its private key and a signer."""

    name: str
    key: PrivateKey
    signer: RequestSigner

    @property
    def kid(self) -> str:
        return self.signer.kid


def register(registry: DepartmentRegistry, name: str, *, clock: Clock, alg: str = "EdDSA",
             kind: str = "department", purposes: tuple[str, ...] = (), roles: tuple[str, ...] = (),
             audience: str = "citygov") -> Party:
    key = generate_key(alg)  # type: ignore[arg-type]
    public = public_of(key)
    registry.add(name, public, kind=kind, purposes=purposes, roles=roles, actor="test:officer")
    return Party(name, key, RequestSigner(key, public.kid, name, audience=audience, clock=clock))


@dataclass
class ApiHarness:
    client: TestClient
    registry: DepartmentRegistry
    audit: AuditLog
    engine: Engine
    clock: Clock
    service: StandInQueryService
    settings: Settings

    def register(self, name: str, **options: Any) -> Party:
        return register(self.registry, name, clock=self.clock, **options)

    def signed_post(self, party: Party, body: bytes, *, url: str = QUERY_URL, headers: dict[str, str] | None = None,
                    **claims: Any) -> Any:
        signed = party.signer.headers("POST", url, body, **claims)
        return self.client.post(url.removeprefix(BASE), content=body, headers={**signed, **(headers or {})})

    def signed_get(self, party: Party, path: str, **claims: Any) -> Any:
        return self.client.get(path, headers=party.signer.headers("GET", BASE + path, b"", **claims))


def harness(settings: Settings, engine: Engine, clock: Clock, service: StandInQueryService | None = None
            ) -> Iterator[ApiHarness]:
    svc = service or StandInQueryService()
    app = create_app(settings, backend=stand_in_backend(svc), engine=engine, clock=clock)
    state = app.state.api
    with TestClient(app) as client:
        yield ApiHarness(client, state.registry, state.audit, engine, clock, svc, settings)


def audit_entries(audit: AuditLog) -> list[dict[str, Any]]:
    from governance.audit.query import EntryFilter, find_entries

    with audit.engine.connect() as conn:
        return [e.fields for e in find_entries(conn, EntryFilter(limit=10_000))]


def data_dir_of(settings: Settings) -> Path:
    return settings.data_dir
