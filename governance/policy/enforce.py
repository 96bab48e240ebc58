"""The one place that carries out obligations, on a batch of records (key-values dicts).

Carried out here: ``require_consent`` (per-record consent lookup), ``drop_fields``, ``mask``,
``pseudonymize`` (keyed HMAC-SHA256, one key per recipient, through a :data:`Pseudonymizer`),
``generalize_location`` (snap a GeoJSON point to the centre of an N-metre grid cell),
``generalize_time`` (truncate instants to a bucket) and ``k_anonymity`` (suppress records whose
quasi-identifier group is smaller than k). ``aggregate_only``, ``noise_budget``, ``retention`` and
``encrypt_at_rest`` belong to later layers: they are handed back as ``deferred`` only when the caller
says it carries them out (``defer=``); otherwise, like any obligation of an unknown kind, they raise
— data is never released with an obligation silently skipped.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from governance.policy.consent import BatchConsentLookup, ConsentLookup
from governance.policy.errors import ObligationError, ObligationNotEnforcedError, UnknownObligationError
from governance.policy.model import (
    AggregateOnly,
    DropFields,
    EncryptAtRest,
    GeneralizeLocation,
    GeneralizeTime,
    KAnonymity,
    Mask,
    NoiseBudget,
    Obligation,
    Pseudonymize,
    RequireConsent,
    Retention,
)

Pseudonymizer = Callable[[str, str], str]
"""``(value, recipient) -> pseudonym``: the same value gets a different pseudonym for each recipient."""

DEFERRABLE = (AggregateOnly, NoiseBudget, Retention, EncryptAtRest)
_ORDER = (RequireConsent, DropFields, Mask, Pseudonymize, GeneralizeLocation, GeneralizeTime, KAnonymity)
_METRES_PER_DEGREE = 111_320.0


def hmac_pseudonymizer(keys: Mapping[str, bytes]) -> Pseudonymizer:
    """HMAC-SHA256 pseudonyms with one key per recipient; an unknown recipient is an error, not a default."""

    def pseudonymize(value: str, recipient: str) -> str:
        key = keys.get(recipient)
        if not key:
            raise ObligationError(f"no pseudonymization key for recipient {recipient!r}")
        return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()

    return pseudonymize


@dataclass(frozen=True)
class Refusal:
    """A record that must not be released, and why (``discard_payload``: keep nothing of it)."""

    index: int
    reason: str
    detail: str
    field: str | None = None
    discard_payload: bool = False


@dataclass
class EnforcementResult:
    records: list[dict[str, Any]]
    """The records that may be released, transformed, in input order."""
    kept: list[int]
    """Index in the input of each released record."""
    refused: list[Refusal] = field(default_factory=list)
    removed_fields: set[str] = field(default_factory=set)
    deferred: list[Obligation] = field(default_factory=list)

    def require_handled(self, kinds: Collection[str]) -> None:
        """Raise unless every deferred obligation is of a kind the caller carries out."""
        left = sorted({o.kind for o in self.deferred} - set(kinds))
        if left:
            raise ObligationNotEnforcedError(f"obligations not carried out: {', '.join(left)}")


def enforce(
    obligations: Iterable[Obligation],
    records: Sequence[Mapping[str, Any]],
    *,
    consent: ConsentLookup | None = None,
    pseudonymizer: Pseudonymizer | None = None,
    at: datetime | None = None,
    defer: Collection[str] = (),
    release: Collection[str] | None = None,
) -> EnforcementResult:
    """Carry out ``obligations`` on copies of ``records``; ``at`` is the decision time consent is checked at.

    With ``release`` (the fields the decision was about), fields outside it are removed last: a field
    the policy was never asked about is not released.
    """
    todo: list[Obligation] = []
    deferred: list[Obligation] = []
    for obligation in obligations:
        if isinstance(obligation, DEFERRABLE):
            if obligation.kind not in defer:
                raise ObligationNotEnforcedError(
                    f"obligation {obligation.kind} cannot be carried out here and the caller does not take it on"
                )
            deferred.append(obligation)
        elif isinstance(obligation, _ORDER):
            todo.append(obligation)
        else:
            raise UnknownObligationError(f"unknown obligation {getattr(obligation, 'kind', obligation)!r}")
    todo.sort(key=lambda o: next(i for i, kind in enumerate(_ORDER) if isinstance(o, kind)))
    rows: dict[int, dict[str, Any]] = {i: dict(r) for i, r in enumerate(records)}
    result = EnforcementResult(records=[], kept=[], deferred=deferred)
    for obligation in todo:
        _apply(obligation, rows, result, consent=consent, pseudonymizer=pseudonymizer, at=at)
    if release is not None:
        allowed = set(release)
        for index, row in rows.items():
            rows[index] = {k: v for k, v in row.items() if k in allowed}
    result.kept = sorted(rows)
    result.records = [rows[i] for i in result.kept]
    result.refused.sort(key=lambda r: r.index)
    return result


def _apply(obligation: Obligation, rows: dict[int, dict[str, Any]], result: EnforcementResult, *,
           consent: ConsentLookup | None, pseudonymizer: Pseudonymizer | None, at: datetime | None) -> None:
    if isinstance(obligation, RequireConsent):
        for index, problem in _consent_problems(obligation, rows, consent, at).items():
            del rows[index]
            result.refused.append(Refusal(index, "no_legal_basis", problem, obligation.subject_field, True))
    elif isinstance(obligation, DropFields):
        for row in rows.values():
            for name in obligation.fields:
                if row.pop(name, _MISSING) is not _MISSING:
                    result.removed_fields.add(name)
    elif isinstance(obligation, Mask):
        for row in rows.values():
            for name in obligation.fields:
                if name in row:
                    row[name] = _mask(row[name], obligation.keep_last)
    elif isinstance(obligation, Pseudonymize):
        if pseudonymizer is None:
            raise ObligationError("a pseudonymize obligation needs a pseudonymizer (recipient keys)")
        for row in rows.values():
            for name in obligation.fields:
                value = row.get(name)
                if value is not None:
                    text = value if isinstance(value, str) else orjson.dumps(value).decode()
                    row[name] = pseudonymizer(text, obligation.recipient)
    elif isinstance(obligation, GeneralizeLocation):
        for row in rows.values():
            if obligation.field in row:
                point = generalize_point(row[obligation.field], obligation.grid_m)
                if point is None:
                    del row[obligation.field]  # not a point: nothing coarser is safe to keep
                    result.removed_fields.add(obligation.field)
                else:
                    row[obligation.field] = point
    elif isinstance(obligation, GeneralizeTime):
        for row in rows.values():
            for name in obligation.fields:
                if name in row:
                    bucketed = generalize_instant(row[name], obligation.bucket_seconds)
                    if bucketed is None:
                        del row[name]
                        result.removed_fields.add(name)
                    else:
                        row[name] = bucketed
    elif isinstance(obligation, KAnonymity):
        groups: dict[bytes, list[int]] = defaultdict(list)
        for index, row in rows.items():
            key = orjson.dumps([row.get(q) for q in obligation.quasi_identifiers], option=orjson.OPT_SORT_KEYS)
            groups[key].append(index)
        for members in groups.values():
            if len(members) < obligation.k:
                for index in members:
                    del rows[index]
                    result.refused.append(Refusal(
                        index, "k_anonymity",
                        f"its group over {', '.join(obligation.quasi_identifiers)} has {len(members)} "
                        f"records, fewer than k={obligation.k}",
                    ))
    else:  # pragma: no cover - _ORDER and this chain list the same kinds
        raise UnknownObligationError(f"unknown obligation {obligation.kind!r}")


_MISSING = object()


def _consent_problems(obligation: RequireConsent, rows: Mapping[int, Mapping[str, Any]],
                      consent: ConsentLookup | None, at: datetime | None) -> dict[int, str]:
    """Why each record without consent must be refused; one batch lookup when the registry offers one."""
    subjects = {i: row.get(obligation.subject_field) for i, row in rows.items()}
    if consent is None or at is None:
        why = ("no consent registry is configured, so consent cannot be established" if consent is None
               else "no decision time to check consent at")
        return dict.fromkeys(rows, why)
    named = {s for s in subjects.values() if isinstance(s, str) and s}
    recipient = obligation.recipient
    if isinstance(consent, BatchConsentLookup):
        granted = consent.consents_for(named, obligation.purpose, at, recipient=recipient)
    else:
        granted = {s for s in named if consent.has_consent(s, obligation.purpose, at, recipient=recipient)}
    problems: dict[int, str] = {}
    for index, subject in subjects.items():
        if not isinstance(subject, str) or not subject:
            problems[index] = f"the record names no data subject in {obligation.subject_field}"
        elif subject not in granted:
            to = f" for {recipient}" if recipient else ""
            problems[index] = f"the data subject has no consent to {obligation.purpose}{to} in force"
    return problems


def _mask(value: Any, keep_last: int) -> Any:
    if not isinstance(value, str):
        return None
    tail = value[-keep_last:] if keep_last and len(value) > 2 * keep_last else ""
    return "****" + tail


def generalize_point(value: Any, grid_m: int) -> dict[str, Any] | None:
    """The centre of the ``grid_m``-metre cell holding a GeoJSON Point; ``None`` for anything else."""
    if not isinstance(value, Mapping) or value.get("type") != "Point":
        return None
    coordinates = value.get("coordinates")
    if not isinstance(coordinates, list | tuple) or len(coordinates) < 2:
        return None
    lon, lat = coordinates[0], coordinates[1]
    if not all(isinstance(c, int | float) and math.isfinite(c) for c in (lon, lat)):
        return None
    lat_step = grid_m / _METRES_PER_DEGREE
    lat_centre = (math.floor(lat / lat_step) + 0.5) * lat_step
    lon_step = grid_m / (_METRES_PER_DEGREE * max(math.cos(math.radians(lat_centre)), 1e-6))
    lon_centre = (math.floor(lon / lon_step) + 0.5) * lon_step
    return {"type": "Point", "coordinates": [round(lon_centre, 6), round(lat_centre, 6)]}


def generalize_instant(value: Any, bucket_seconds: int) -> str | None:
    """An instant (or ``start/end`` interval) truncated to ``bucket_seconds``, in UTC with ``Z``."""
    if not isinstance(value, str):
        return None
    parts = value.split("/")
    out = []
    for part in parts:
        moment = parse_instant(part)
        if moment is None:
            return None
        epoch = int(moment.timestamp())
        out.append(datetime.fromtimestamp(epoch - epoch % bucket_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return "/".join(out)


def parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
