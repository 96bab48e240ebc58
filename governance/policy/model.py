"""The one policy input shape and the one decision shape, for all four stages.

A decision is a pure function of (policy revision, input): the time and every other piece of context
come in ``input.context``, never from a clock inside a policy. Obligations are data — a discriminated
union by ``kind`` — and :mod:`governance.policy.enforce` is the one place that carries them out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator


class Stage(StrEnum):
    """Where in the data's life a decision is taken."""

    COLLECTION = "collection"
    STORAGE = "storage"
    USE = "use"
    SHARING = "sharing"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Actor(_Frozen):
    """Who acts: a data source (adapter), a department, an external recipient or a citygov service."""

    kind: Literal["source", "department", "external", "service"]
    id: str = Field(min_length=1)
    department: str | None = None
    roles: tuple[str, ...] = ()


class Subject(_Frozen):
    """The data subject: one person (``id``), or only the property that names subjects in each record."""

    id: str | None = None
    property: str | None = None


class ConsentState(_Frozen):
    """What the caller already knows about one subject's consent for ``purpose``."""

    purpose: str
    given: bool


class Context(BaseModel):
    """Time (required, timezone-aware) and anything else the decision may depend on."""

    model_config = ConfigDict(extra="allow", frozen=True)

    time: datetime
    channel: str | None = None
    break_glass: bool = False

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("context.time needs a timezone (decisions are replayed in UTC)")
        return value.astimezone(UTC)

    @field_serializer("time")
    def _rfc3339(self, value: datetime) -> str:
        # "+00:00", never "Z": regopy 1.5.2's time.parse_rfc3339_ns is undefined for a trailing Z
        return value.astimezone(UTC).isoformat()


class PolicyInput(_Frozen):
    """``{stage, actor, purpose, dataset, fields, subject?, agreement?, consent?, context}``."""

    stage: Stage
    actor: Actor
    purpose: str | None = None
    dataset: str = Field(min_length=1)
    fields: tuple[str, ...] = ()
    subject: Subject | None = None
    agreement: str | None = None
    consent: ConsentState | None = None
    context: Context

    @field_validator("fields")
    @classmethod
    def _sorted_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(value)))

    def document(self) -> dict[str, Any]:
        """The JSON document both engines receive as ``input`` (absent, not null, when unset)."""
        return self.model_dump(mode="json", exclude_none=True)


class Reason(_Frozen):
    """Why: a machine-readable ``code`` (counted, shown as the rejection reason) and a sentence."""

    code: str = Field(min_length=1)
    detail: str = ""


# --- obligations -------------------------------------------------------------------------------------


class DropFields(_Frozen):
    kind: Literal["drop_fields"]
    fields: tuple[str, ...] = Field(min_length=1)


class Mask(_Frozen):
    kind: Literal["mask"]
    fields: tuple[str, ...] = Field(min_length=1)
    keep_last: int = Field(default=0, ge=0, le=4)


class Pseudonymize(_Frozen):
    """Replace values by a keyed pseudonym, different for each recipient (unlinkable across them)."""

    kind: Literal["pseudonymize"]
    fields: tuple[str, ...] = Field(min_length=1)
    recipient: str = Field(min_length=1)


class GeneralizeLocation(_Frozen):
    kind: Literal["generalize_location"]
    field: str = "location"
    grid_m: int = Field(ge=1)


class GeneralizeTime(_Frozen):
    kind: Literal["generalize_time"]
    fields: tuple[str, ...] = Field(min_length=1)
    bucket_seconds: int = Field(ge=1)


class RequireConsent(_Frozen):
    """Each record's subject must have consent for ``purpose`` in force at the decision time.

    Checked per record by the enforcement module, with one batch lookup per purpose. With ``recipient``
    (sharing), the consent must also name that recipient.
    """

    kind: Literal["require_consent"]
    purpose: str = Field(min_length=1)
    subject_field: str = Field(min_length=1)
    recipient: str | None = None


class KAnonymity(_Frozen):
    kind: Literal["k_anonymity"]
    k: int = Field(ge=2)
    quasi_identifiers: tuple[str, ...] = Field(min_length=1)


class AggregateOnly(_Frozen):
    kind: Literal["aggregate_only"]
    group_by: tuple[str, ...] = ()


class Retention(_Frozen):
    kind: Literal["retention"]
    days: int = Field(ge=0)


class NoiseBudget(_Frozen):
    kind: Literal["noise_budget"]
    epsilon: float = Field(gt=0)
    delta: float = Field(default=0.0, ge=0, lt=1)


class EncryptAtRest(_Frozen):
    kind: Literal["encrypt_at_rest"]
    fields: tuple[str, ...] = Field(min_length=1)


Obligation = Annotated[
    DropFields | Mask | Pseudonymize | GeneralizeLocation | GeneralizeTime | RequireConsent | KAnonymity
    | AggregateOnly | Retention | NoiseBudget | EncryptAtRest,
    Field(discriminator="kind"),
]


class PolicyResult(_Frozen):
    """Exactly what a stage's ``decision`` rule must return; anything else is malformed (a deny)."""

    allow: bool
    reasons: tuple[Reason, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    flags: tuple[str, ...] = ()


class Decision(_Frozen):
    """A policy result plus the revision that made it; ``failure`` is set when the engine failed closed."""

    allow: bool
    reasons: tuple[Reason, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    flags: tuple[str, ...] = ()
    revision: str
    failure: str | None = None

    @classmethod
    def from_result(cls, result: PolicyResult, revision: str) -> Decision:
        """Canonical order (sets come back in engine-specific order), so equal decisions compare equal."""
        obligations = sorted(result.obligations,
                             key=lambda o: orjson.dumps(o.model_dump(), option=orjson.OPT_SORT_KEYS))
        return cls(
            allow=result.allow,
            reasons=tuple(sorted(set(result.reasons), key=lambda r: (r.code, r.detail))),
            obligations=tuple(obligations),
            flags=tuple(sorted(set(result.flags))),
            revision=revision,
        )

    @classmethod
    def fail_closed(cls, revision: str, failure: str, detail: str) -> Decision:
        """The deny that stands in for a decision the engine could not make."""
        return cls(allow=False, reasons=(Reason(code=f"policy_{failure}", detail=detail),), revision=revision,
                   failure=failure)

    def outcome(self) -> dict[str, Any]:
        """What the policy decided, without who computed it: the part a replay must reproduce."""
        return self.model_dump(mode="json", include={"allow", "reasons", "obligations", "flags"})

    def has_flag(self, flag: str) -> bool:
        return flag in self.flags

    def of_kind(self, kind: str) -> list[Obligation]:
        return [o for o in self.obligations if o.kind == kind]


class DecisionRecord(_Frozen):
    """What the audit log keeps of a decision: enough to replay it against its revision.

    ``cached`` marks a decision reused for another batch of the same scope; ``records`` is how many
    records it governed there (collection), ``engine`` which engine answered.
    """

    revision: str
    stage: Stage
    input: PolicyInput
    decision: Decision
    engine: str | None = None
    cached: bool = False
    records: int | None = None
