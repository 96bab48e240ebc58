"""The query layer of the signed data API: one request in, a shaped (policy-governed) result out.

CONTRACT between the API layer (governance/api/, authenticates and signs) and this module (decides,
reads, decrypts what the decision allows, applies obligations). See /work/notes/query-contract.md.

``QueryService.run`` raises ``AccessDeniedError`` (policy deny, no/expired/revoked agreement, no consent;
``reasons`` = policy reason codes, ``decision_id`` set), ``QuotaExceededError`` (request quota or privacy
budget spent), ``InvalidRequestError`` (unknown field/dataset, bad cursor, bad filter) and
``PayloadTooLargeError`` (over limits). It never returns a partial or un-shaped result. Filters are
parameters, never SQL text.

How a request is answered (``docs/sharing.md`` has the whole story):

1. the request is checked against the catalog (dataset, fields, filters, limits) — before any decision;
2. the **use** or **sharing** policy decides (recorded in the audit log; its sequence number is the
   ``decision_id``) with the agreements register over the policy bundle; a deny is ``AccessDeniedError``;
3. the agreement's daily request quota is counted;
4. stored rows are read by keyset pages (whole-set answers — aggregates, k-anonymity — read every
   matching row up to ``query_max_scan_rows``); only the released fields are decrypted;
5. the decision's obligations are carried out (``apply_decision``: consent, drop, mask, pseudonyms,
   generalization); every store pseudonym that would leave becomes the recipient's own pseudonym;
6. k-anonymity (Mondrian, verified before release), aggregates (``aggregate_only``) and differential
   privacy (``noise_budget``: OpenDP, spending the agreement's privacy budget) follow;
7. the result is put in the requested format and checked against ``query_max_result_bytes``.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from governance.anonymize.budget import PrivacyBudget
from governance.anonymize.dp import DpQuery, bound_contributions, dp_aggregate
from governance.anonymize.errors import PrivacyParameterError
from governance.anonymize.kanon import mondrian
from governance.audit.log import AuditLog
from governance.catalog import EntitySchema, SchemaCatalog, default_catalog
from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.errors import (
    AccessDeniedError,
    InvalidRequestError,
    PayloadTooLargeError,
    StorageError,
)
from governance.ngsi import to_ngsi_ld
from governance.policy.consent import ConsentLookup
from governance.policy.model import (
    Actor,
    AggregateOnly,
    Decision,
    DropFields,
    KAnonymity,
    NoiseBudget,
    Stage,
    Subject,
)
from governance.policy.service import Outcome, apply_decision, decide_use_or_sharing
from governance.protect.errors import DecryptionError
from governance.protect.fieldcrypt import FieldProtector, is_sealed, observation_time_fields
from governance.protect.keyring import Keyring
from governance.protect.pseudonym import Pseudonyms, is_pseudonym
from governance.sharing.aggregate import aggregate as exact_aggregate
from governance.sharing.agreements import AgreementRegistry, AgreementView, is_agreement_id
from governance.sharing.cursor import CursorCodec, binding
from governance.sharing.decisions import SequencedAuditor, SharingPolicy
from governance.sharing.quota import RequestQuota
from governance.sharing.reader import RowFilter, StoredRow, read_rows
from governance.sharing.tables import ensure_tables

Clock = Callable[[], datetime]
CHUNK_ROWS = 1000
DEFERRED = ("aggregate_only", "noise_budget")
PURPOSE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Requester:
    """Who is asking, as established by the API layer after the signature checks."""

    id: str
    """The registered department or recipient name (e.g. ``transport``, ``public-health-institute``)."""
    kind: Literal["department", "external"]
    roles: tuple[str, ...] = ()


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Where(_Body):
    from_: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None
    bbox: tuple[float, float, float, float] | None = None
    """min lon, min lat, max lon, max lat"""
    ids: list[str] | None = Field(default=None, max_length=500)


class Aggregate(_Body):
    function: Literal["count", "sum", "mean"]
    field: str | None = None
    group_by: list[str] = Field(default=[], max_length=8)
    bounds: tuple[float, float] | None = None
    """Clamping bounds of a differentially private sum or mean, when the schema gives none."""


class QueryRequest(_Body):
    """The JSON body of ``POST /v1/data/query``."""

    dataset: str
    purpose: str
    fields: list[str] = Field(min_length=1, max_length=64)
    where: Where | None = None
    aggregate: Aggregate | None = None
    format: Literal["keyvalues", "ngsi-ld"] = "keyvalues"
    agreement: str | None = None
    break_glass: bool = False
    page_size: int = Field(default=1000, ge=1, le=10_000)
    cursor: str | None = None


@dataclass
class QueryResult:
    records: list[dict[str, Any]]
    """Already shaped (obligations applied), in the requested format."""
    next_cursor: str | None
    stage: str
    """``use`` or ``sharing``."""
    decision_id: str
    policy_revision: str
    fields: list[str]
    """Fields actually released."""
    obligations: list[str] = field(default_factory=list)
    """Kinds of the obligations applied."""
    suppressed: int = 0
    """Records withheld (k-anonymity suppression, missing consent)."""
    epsilon_spent: float | None = None
    records_json: bytes | None = field(default=None, repr=False, compare=False)
    """``orjson.dumps(records)``, kept from the size check so the API does not encode the records twice."""


@dataclass(frozen=True)
class _Dataset:
    name: str
    schemas: tuple[EntitySchema, ...]
    subject_property: str | None

    @property
    def fields(self) -> set[str]:
        return {name for schema in self.schemas for name in schema.classification}

    def schema_of(self, entity_type: str) -> EntitySchema:
        for schema in self.schemas:
            if schema.entity_type == entity_type:
                return schema
        return self.schemas[0]

    def bounds_of(self, name: str) -> tuple[float, float] | None:
        """The field's ``minimum`` and ``maximum`` in every schema of the dataset (the widest), if all give both."""
        lows: list[float] = []
        highs: list[float] = []
        for schema in self.schemas:
            prop = schema.document.get("properties", {}).get(name)
            if not isinstance(prop, Mapping):
                continue
            low, high = prop.get("minimum"), prop.get("maximum")
            if not (isinstance(low, int | float) and isinstance(high, int | float) and _finite(low)
                    and _finite(high)):
                return None
            lows.append(float(low))
            highs.append(float(high))
        if not lows:
            return None
        return min(lows), max(highs)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class _Plan:
    """What the decision means for this request: whole-set or paged, and the DP parameters if any."""

    whole: bool
    noise: NoiseBudget | None
    bounds: tuple[float, float] | None
    contributions: int


@dataclass
class _Page:
    rows: list[StoredRow]
    records: list[dict[str, Any]]
    next_after: int | None


class QueryService:
    """See the module docstring. ``from_settings(settings, engine, clock=...)`` builds one."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        policy: SharingPolicy,
        protector: FieldProtector,
        pseudonyms: Pseudonyms,
        consent: ConsentLookup | None,
        agreements: AgreementRegistry,
        cursors: CursorCodec,
        catalog: SchemaCatalog | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.policy = policy
        self.protector = protector
        self.pseudonyms = pseudonyms
        self.consent = consent
        self.agreements = agreements
        self.cursors = cursors
        self.catalog = catalog or default_catalog()
        self.clock = clock
        self.budget = PrivacyBudget(engine, clock=clock)
        self.quota = RequestQuota(engine)
        self._datasets = self._index_datasets()

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine, *, clock: Clock = utc_now) -> QueryService:
        ensure_tables(engine)
        catalog = default_catalog()
        keyring = Keyring.from_settings(settings, engine, clock=clock)
        audit = AuditLog.open(engine, settings.data_dir, clock=clock)
        registry = AgreementRegistry(engine, settings, audit=audit, clock=clock, catalog=catalog)
        policy = SharingPolicy(settings, registry, SequencedAuditor(audit))
        return cls(
            engine, settings,
            policy=policy,
            protector=FieldProtector.from_settings(settings, engine, keyring=keyring, clock=clock),
            pseudonyms=Pseudonyms(keyring),
            consent=ConsentRegistry(engine, keyring, clock=clock, issuer=settings.receipt_issuer),
            agreements=registry,
            cursors=CursorCodec(keyring.pseudonym_key().derive("citygov/v1/query-cursor", purpose="cursor")),
            catalog=catalog,
            clock=clock,
        )

    def _index_datasets(self) -> dict[str, _Dataset]:
        grouped: dict[str, list[EntitySchema]] = {}
        for entity_type in self.catalog.types():
            schema = self.catalog.get(entity_type)
            grouped.setdefault(schema.dataset, []).append(schema)
        return {name: _Dataset(name, tuple(schemas), schemas[0].subject_property)
                for name, schemas in grouped.items()}

    # -- the request -----------------------------------------------------------------------------------

    def run(self, requester: Requester, request: QueryRequest) -> QueryResult:
        now = self.clock()
        if now.tzinfo is None:
            raise InvalidRequestError("the query clock must return aware times")
        now = now.astimezone(UTC)
        dataset = self._check_request(requester, request)
        agreement = self.agreements.find(request.agreement) if request.agreement else None
        actor = Actor(kind=requester.kind, id=requester.id,
                      department=requester.id if requester.kind == "department" else None, roles=requester.roles)
        point = self.policy.point()
        outcome = decide_use_or_sharing(
            point, actor=actor, purpose=request.purpose, dataset=request.dataset, fields=request.fields, time=now,
            agreement=request.agreement,
            subject=Subject(property=dataset.subject_property) if dataset.subject_property else None,
            break_glass=request.break_glass,
        )
        decision = outcome.decision
        decision_id = self.policy.take_decision_id() or f"unrecorded-{uuid.uuid4()}"
        self._refuse_unless_allowed(outcome, agreement, decision_id)
        released = _released(outcome)
        plan = self._plan(request, dataset, decision, released, decision_id)
        if outcome.stage is Stage.SHARING and agreement is not None and agreement.terms.quota_per_day is not None:
            self.quota.take(agreement.id, agreement.terms.quota_per_day, now, decision_id=decision_id)

        page = self._read(requester, request, dataset, released, now, whole=plan.whole)
        subjects = [row.subject or _text(row.data.get(dataset.subject_property or "")) for row in page.rows]
        without_kanon = Outcome(outcome.stage, outcome.input, decision.model_copy(
            update={"obligations": tuple(o for o in decision.obligations if not isinstance(o, KAnonymity))}))
        enforced = apply_decision(without_kanon, page.records, consent=self.consent,
                                  pseudonymizer=self._pseudonymize, defer=DEFERRED)
        enforced.require_handled(DEFERRED)
        suppressed = len(enforced.refused)
        records = [self._recipient_pseudonyms(r, requester.id) for r in enforced.records]
        types = [page.rows[i].entity_type for i in enforced.kept]
        subjects = [subjects[i] for i in enforced.kept]
        applied: set[str] = {o.kind for o in decision.obligations if not isinstance(o, AggregateOnly | NoiseBudget)}

        for obligation in decision.obligations:
            if isinstance(obligation, KAnonymity):
                result = mondrian(records, obligation.quasi_identifiers, obligation.k)
                records = result.records
                types = [types[i] for i in result.kept]
                subjects = [subjects[i] for i in result.kept]
                suppressed += result.suppressed

        epsilon: float | None = None
        if request.aggregate is not None:
            records, epsilon = self._aggregate(request.aggregate, plan, records, subjects, agreement, decision_id)
            applied |= {o.kind for o in decision.obligations if isinstance(o, AggregateOnly | NoiseBudget)}
        elif request.format == "ngsi-ld":
            records = [to_ngsi_ld({"type": t, **r}, dataset.schema_of(t)) for r, t in zip(records, types, strict=True)]

        encoded = orjson.dumps(records)
        size = len(encoded)
        if size > self.settings.query_max_result_bytes:
            raise PayloadTooLargeError(
                f"the result is {size} bytes, over the {self.settings.query_max_result_bytes}-byte limit: ask for a "
                "smaller page or a narrower filter"
            )
        next_cursor = None
        if page.next_after is not None:
            next_cursor = self.cursors.encode(page.next_after, self._binding(requester, request))
        return QueryResult(
            records=records, next_cursor=next_cursor, stage=outcome.stage.value, decision_id=decision_id,
            policy_revision=decision.revision, fields=sorted(released), obligations=sorted(applied),
            suppressed=suppressed, epsilon_spent=epsilon, records_json=encoded,
        )

    # -- checks ----------------------------------------------------------------------------------------

    def _check_request(self, requester: Requester, request: QueryRequest) -> _Dataset:
        dataset = self._datasets.get(request.dataset)
        if dataset is None:
            raise InvalidRequestError(f"unknown dataset {request.dataset[:128]!r}")
        if re.match(PURPOSE_PATTERN, request.purpose) is None:
            raise InvalidRequestError("purpose is a dotted name of at most 128 letters, digits, '.', '_' or '-'")
        if request.agreement is not None and not is_agreement_id(request.agreement):
            raise InvalidRequestError("agreement is an id of at most 128 letters, digits, '.', '_', ':' or '-'")
        known = dataset.fields
        unknown = sorted({f for f in request.fields if f not in known})
        if unknown:
            shown = ", ".join(repr(f[:64]) for f in unknown[:5])
            raise InvalidRequestError(f"dataset {dataset.name} has no field {shown}")
        if len(set(request.fields)) != len(request.fields):
            raise InvalidRequestError("fields are listed once each")
        if request.aggregate is None and request.page_size > self.settings.query_max_page_size:
            raise PayloadTooLargeError(
                f"page_size {request.page_size} is over the limit of {self.settings.query_max_page_size}")
        where = request.where
        if where is not None:
            for name, moment in (("from", where.from_), ("to", where.to)):
                if moment is not None and moment.tzinfo is None:
                    raise InvalidRequestError(f"where.{name} needs a time zone")
            if where.from_ is not None and where.to is not None and where.from_ >= where.to:
                raise InvalidRequestError("where.from must be before where.to")
            if where.bbox is not None:
                west, south, east, north = where.bbox
                if not all(math.isfinite(v) for v in where.bbox):
                    raise InvalidRequestError("where.bbox holds finite numbers")
                if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
                    raise InvalidRequestError("where.bbox is [min lon, min lat, max lon, max lat] within -180..180, "
                                              "-90..90")
            if where.ids is not None and (not where.ids or any(not i or len(i) > 256 for i in where.ids)):
                raise InvalidRequestError("where.ids lists 1 to 500 ids of at most 256 characters")
        if request.aggregate is not None:
            aggregate = request.aggregate
            named = [*aggregate.group_by, *([aggregate.field] if aggregate.field else [])]
            outside = sorted({n for n in named if n not in request.fields})
            if outside:
                raise InvalidRequestError(f"aggregate names fields the request does not ask for: {outside[:5]}")
            if aggregate.function != "count" and aggregate.field is None:
                raise InvalidRequestError(f"a {aggregate.function} needs a field")
            if len(set(aggregate.group_by)) != len(aggregate.group_by):
                raise InvalidRequestError("group_by lists fields once each")
            if aggregate.bounds is not None:
                low, high = aggregate.bounds
                if not (math.isfinite(low) and math.isfinite(high) and low < high):
                    raise InvalidRequestError("aggregate.bounds are two finite numbers, lower first")
            if request.format == "ngsi-ld":
                raise InvalidRequestError("aggregates are returned as key-values; ask for format keyvalues")
            if request.cursor is not None:
                raise InvalidRequestError("aggregates are answered whole: there is no page to continue")
        if request.cursor is not None:
            self.cursors.decode(request.cursor, self._binding(requester, request))
        return dataset

    def _refuse_unless_allowed(self, outcome: Outcome, agreement: AgreementView | None, decision_id: str) -> None:
        decision = outcome.decision
        revoked = agreement is not None and agreement.status == "revoked"
        if decision.allow and not (outcome.stage is Stage.SHARING and revoked):
            return
        reasons = tuple(r.code for r in decision.reasons) if not decision.allow else ()
        if revoked:
            reasons += ("agreement_revoked",)
        raise AccessDeniedError(f"the {outcome.stage.value} policy refused the request: {', '.join(reasons)}",
                                reasons=reasons, decision_id=decision_id)

    def _plan(self, request: QueryRequest, dataset: _Dataset, decision: Decision, released: set[str],
              decision_id: str) -> _Plan:
        only = [o for o in decision.obligations if isinstance(o, AggregateOnly)]
        noises = [o for o in decision.obligations if isinstance(o, NoiseBudget)]
        aggregate = request.aggregate
        if (only or noises) and aggregate is None:
            kinds = sorted({*(o.kind for o in only), *(o.kind for o in noises)})
            raise AccessDeniedError(f"this release is {' and '.join(kinds)}: ask for an aggregate",
                                    reasons=("aggregate_required",), decision_id=decision_id)
        where = request.where
        if where is not None and where.ids is not None and "id" not in released:
            raise InvalidRequestError("filtering by ids needs the entity id among the released fields")
        if where is not None and where.bbox is not None and "location" not in released:
            raise InvalidRequestError("filtering by bbox needs location among the released fields")
        if request.format == "ngsi-ld" and aggregate is None and "id" not in released:
            raise InvalidRequestError("NGSI-LD entities need their id, which this release does not include; "
                                      "ask for keyvalues")
        kanon = any(isinstance(o, KAnonymity) for o in decision.obligations)
        if kanon and request.cursor is not None:
            raise InvalidRequestError("k-anonymous releases are answered whole: there is no page to continue")
        bounds: tuple[float, float] | None = None
        noise = min(noises, key=lambda o: (o.epsilon, o.delta)) if noises else None
        if aggregate is not None:
            names = [*aggregate.group_by, *([aggregate.field] if aggregate.field else [])]
            hidden = sorted({n for n in names if n not in released})
            if hidden:
                raise InvalidRequestError(f"the decision does not release {hidden[:5]}, so they cannot be aggregated")
            for obligation in only:
                beyond = sorted(set(aggregate.group_by) - set(obligation.group_by))
                if beyond:
                    raise AccessDeniedError(
                        f"aggregates may be grouped only by {sorted(obligation.group_by)}, not by {beyond}",
                        reasons=("aggregate_only",), decision_id=decision_id)
            if noise is not None and aggregate.function != "count":
                assert aggregate.field is not None
                bounds = aggregate.bounds or dataset.bounds_of(aggregate.field)
            if noise is not None:
                DpQuery(aggregate.function, noise.epsilon, noise.delta, aggregate.field, tuple(aggregate.group_by),
                        bounds, self.settings.dp_max_contributions).check()
        return _Plan(whole=aggregate is not None or kanon, noise=noise, bounds=bounds,
                                  contributions=self.settings.dp_max_contributions)

    # -- reading -------------------------------------------------------------------------------------

    def _binding(self, requester: Requester, request: QueryRequest) -> bytes:
        return binding({"id": requester.id, "kind": requester.kind, "roles": list(requester.roles)},
                       request.model_dump(mode="json", by_alias=True))

    def _read(self, requester: Requester, request: QueryRequest, dataset: _Dataset, released: set[str],
              now: datetime, *, whole: bool) -> _Page:
        where = request.where
        ids: set[str] | None = None
        if where is not None and where.ids is not None:
            ids = set(where.ids)
            if dataset.subject_property is not None:
                ids |= {self.pseudonyms.of(i) for i in where.ids if not is_pseudonym(i)}
        row_filter = RowFilter(dataset.name, now, where.from_ if where else None, where.to if where else None, ids)
        bbox = where.bbox if where is not None else None
        after = 0
        if request.cursor is not None:
            after = self.cursors.decode(request.cursor, self._binding(requester, request))
        limit = self.settings.query_max_scan_rows if whole else request.page_size
        scan_limit = self.settings.query_max_scan_rows
        rows: list[StoredRow] = []
        records: list[dict[str, Any]] = []
        scanned = 0
        # a page first reads the rows it needs and one more (a page of 10 reads 11 rows, not 1000); when filters
        # (bbox, erased subjects) leave it short, each further read is four times larger, up to CHUNK_ROWS
        size = CHUNK_ROWS if whole else min(CHUNK_ROWS, limit + 1, scan_limit)
        while True:
            chunk = read_rows(self.engine, row_filter, after=after, limit=size)
            scanned += len(chunk)
            if whole and scanned > scan_limit:
                raise PayloadTooLargeError(
                    f"more than {scan_limit} stored rows match; whole-set answers (aggregates, k-anonymity) need a "
                    "narrower time range or filter")
            opened = self._reveal(chunk, released, dataset)
            for row, record in zip(chunk, opened, strict=True):
                if record is None or (bbox is not None and not _inside(record.get("location"), bbox)):
                    continue
                rows.append(row)
                records.append(record)
                if not whole and len(rows) == limit:
                    return _Page(rows, records, row.pk)
            if len(chunk) < size:
                return _Page(rows, records, None)
            after = chunk[-1].pk
            if not whole and scanned >= scan_limit:
                return _Page(rows, records, after)  # a short page; the cursor goes on from here
            size = CHUNK_ROWS if whole else min(CHUNK_ROWS, size * 4, scan_limit - scanned)

    def _reveal(self, chunk: Sequence[StoredRow], released: set[str], dataset: _Dataset
                ) -> list[dict[str, Any] | None]:
        """The rows' entities with the released fields decrypted; ``None`` for rows of erased subjects."""
        if not chunk:
            return []
        entities = [row.data for row in chunk]
        subject = dataset.subject_property
        sealed = {name for e in entities for name in released if is_sealed(e.get(name))}
        if not sealed:  # nothing released is sealed: the entities as they are (what _unsealed would find)
            return list(entities)
        if subject is None:
            raise StorageError("a released value is still sealed; nothing is released")
        times = [row.observed_at for row in chunk]
        # the observation time: sealed in rows written before it was left in the clear, plain since
        clear_ok = observation_time_fields(dataset.schemas)
        try:
            opened = self.protector.reveal(entities, fields=sealed, subject_property=subject, observed_at=times,
                                           clear_ok=clear_ok)
            return self._unsealed(opened, released)
        except DecryptionError:
            pass
        subjects = {str(e.get(subject)) for e in entities if is_pseudonym(e.get(subject))}
        usable = set(self.protector.subject_keys.data_keys(subjects, create=False))
        keep = [i for i, e in enumerate(entities) if e.get(subject) in usable]
        try:
            opened = self.protector.reveal([entities[i] for i in keep], fields=sealed, subject_property=subject,
                                           observed_at=[times[i] for i in keep], clear_ok=clear_ok)
        except DecryptionError:
            raise StorageError("stored values did not decrypt (altered, or keys unusable); nothing is released") \
                from None
        out: list[dict[str, Any] | None] = [None] * len(entities)
        for index, entity in zip(keep, self._unsealed(opened, released), strict=True):
            out[index] = entity
        return out

    @staticmethod
    def _unsealed(entities: Sequence[dict[str, Any]], released: set[str]) -> list[dict[str, Any] | None]:
        for entity in entities:
            if any(is_sealed(entity.get(name)) for name in released):
                raise StorageError("a released value is still sealed; nothing is released")
        return list(entities)

    # -- shaping -------------------------------------------------------------------------------------

    def _pseudonymize(self, value: str, recipient: str) -> str:
        return self.pseudonyms.for_recipient(value, recipient)

    def _recipient_pseudonyms(self, record: dict[str, Any], recipient: str) -> dict[str, Any]:
        """Store pseudonyms never leave: each becomes the recipient's own (unlinkable across recipients)."""
        return {k: (self.pseudonyms.for_recipient(v, recipient) if is_pseudonym(v) else v) for k, v in record.items()}

    def _aggregate(self, aggregate: Aggregate, plan: _Plan, records: list[dict[str, Any]],
                   subjects: list[str | None], agreement: AgreementView | None, decision_id: str,
                   ) -> tuple[list[dict[str, Any]], float | None]:
        if plan.noise is None:
            return exact_aggregate(records, aggregate.function, aggregate.field, aggregate.group_by), None
        if agreement is None:  # pragma: no cover - noise budgets come from agreements only
            raise PrivacyParameterError("a noise budget needs an agreement to account it to")
        total = agreement.terms.epsilon_budget or self.settings.dp_default_epsilon_budget
        personal = any(subjects)  # without data subjects, each record is its own unit of privacy
        contributions = plan.contributions if personal else 1
        query = DpQuery(aggregate.function, plan.noise.epsilon, plan.noise.delta, aggregate.field,
                        tuple(aggregate.group_by), plan.bounds, contributions)
        bounded = bound_contributions(records, subjects if personal else None, contributions)
        self.budget.spend(agreement.id, plan.noise.epsilon, total=total, decision_id=decision_id)
        answer = dp_aggregate(bounded, query)
        return answer.rows, answer.epsilon


def _released(outcome: Outcome) -> set[str]:
    dropped = {name for o in outcome.decision.obligations if isinstance(o, DropFields) for name in o.fields}
    return set(outcome.input.fields) - dropped


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _inside(location: Any, bbox: tuple[float, float, float, float]) -> bool:
    if not isinstance(location, Mapping) or location.get("type") != "Point":
        return False
    coordinates = location.get("coordinates")
    if not isinstance(coordinates, list | tuple) or len(coordinates) < 2:
        return False
    lon, lat = coordinates[0], coordinates[1]
    if not (_finite(lon) and _finite(lat)):
        return False
    west, south, east, north = bbox
    return bool(west <= lon <= east and south <= lat <= north)
