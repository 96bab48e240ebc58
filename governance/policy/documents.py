"""Checks on the data documents (``policies/data/*.json``) before any policy reads them.

A privacy officer edits these files; a typo (an unknown purpose, a dataset that does not exist, an
obligation with a wrong field) would otherwise surface as a deny at decision time. Here it is a
``PolicyBundleError`` naming the document and the entry, when the bundle is loaded or tested.
Documents this module does not know are accepted as they are (for custom policies).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from governance.policy.errors import PolicyBundleError
from governance.policy.model import Obligation

Level = Literal["public", "internal", "personal", "special-category"]
Basis = Literal["consent", "contract", "legal-obligation", "vital-interest", "public-task", "legitimate-interest"]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Purpose(_Doc):
    title: str
    parent: str | None = None


class SourceDataset(_Doc):
    purpose: str
    max_classification: Level = "internal"
    basis: Basis | None = None
    drop: list[str] = []


class Source(_Doc):
    title: str = ""
    datasets: dict[str, SourceDataset]


class Entitlement(_Doc):
    datasets: list[str] = Field(min_length=1)
    purposes: list[str] = Field(min_length=1)
    fields: Literal["*"] | list[str]
    basis: Basis | None = None


class Department(_Doc):
    title: str
    owns: list[str] = []
    entitlements: list[Entitlement] = []


class Agreement(_Doc):
    title: str
    provider: str
    recipient: str
    recipient_kind: Literal["department", "external"]
    datasets: list[str] = Field(min_length=1)
    purposes: list[str] = Field(min_length=1)
    fields: list[str] = Field(min_length=1)
    valid_from: datetime
    valid_until: datetime
    basis: Basis
    obligations: list[Obligation] = []

    @model_validator(mode="after")
    def _period(self) -> Agreement:
        if self.valid_from.tzinfo is None or self.valid_until.tzinfo is None:
            raise ValueError("valid_from and valid_until need a timezone")
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self


class Retention(_Doc):
    classification: dict[Level, int]
    datasets: dict[str, dict[Literal["raw", "aggregate"], int]] = {}

    @model_validator(mode="after")
    def _complete(self) -> Retention:
        missing = {"public", "internal", "personal", "special-category"} - set(self.classification)
        if missing:
            raise ValueError(f"classification has no retention for {sorted(missing)}")
        return self


class BreakGlass(_Doc):
    title: str
    datasets: list[str] = Field(min_length=1)
    purposes: list[str] = Field(min_length=1)
    roles: list[str] = Field(min_length=1)
    basis: Basis
    fields: list[str] = Field(min_length=1)


_MODELS: dict[str, Any] = {
    "purposes": dict[str, Purpose], "sources": dict[str, Source], "departments": dict[str, Department],
    "agreements": dict[str, Agreement], "retention": Retention, "break_glass": dict[str, BreakGlass],
}


def check_documents(city: Mapping[str, Any]) -> None:
    """Validate the known documents and their references to each other; raise PolicyBundleError."""
    from pydantic import TypeAdapter

    parsed: dict[str, Any] = {}
    for key, model in _MODELS.items():
        if key not in city:
            continue
        try:
            parsed[key] = TypeAdapter(model).validate_python(city[key])
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PolicyBundleError(f"data document {key}: {where}: {first['msg']}") from None
    problems = _references(parsed, set(city.get("datasets", {})))
    if problems:
        raise PolicyBundleError("data documents refer to unknown entries:\n  " + "\n  ".join(problems))


def _references(docs: Mapping[str, Any], datasets: set[str]) -> list[str]:
    purposes: dict[str, Purpose] = docs.get("purposes", {})
    departments: dict[str, Department] = docs.get("departments", {})
    problems: list[str] = []

    def need(kind: str, name: str, known: Any, where: str) -> None:
        if known and name not in known:
            problems.append(f"{where}: unknown {kind} {name!r}")

    for name, purpose in purposes.items():
        if purpose.parent is not None:
            need("purpose", purpose.parent, purposes, f"purposes.{name}.parent")
    for source_name, source in docs.get("sources", {}).items():
        for dataset, entry in source.datasets.items():
            need("dataset", dataset, datasets, f"sources.{source_name}")
            need("purpose", entry.purpose, purposes, f"sources.{source_name}.{dataset}")
    for dept_name, dept in departments.items():
        for i, entitlement in enumerate(dept.entitlements):
            for dataset in entitlement.datasets:
                need("dataset", dataset, datasets, f"departments.{dept_name}.entitlements[{i}]")
            for purpose_name in entitlement.purposes:
                need("purpose", purpose_name, purposes, f"departments.{dept_name}.entitlements[{i}]")
    for agreement_id, agreement in docs.get("agreements", {}).items():
        need("department", agreement.provider, departments, f"agreements.{agreement_id}.provider")
        if agreement.recipient_kind == "department":
            need("department", agreement.recipient, departments, f"agreements.{agreement_id}.recipient")
        for dataset in agreement.datasets:
            need("dataset", dataset, datasets, f"agreements.{agreement_id}")
        for purpose_name in agreement.purposes:
            need("purpose", purpose_name, purposes, f"agreements.{agreement_id}")
    for dept_name, rule in docs.get("break_glass", {}).items():
        need("department", dept_name, departments, "break_glass")
        for dataset in rule.datasets:
            need("dataset", dataset, datasets, f"break_glass.{dept_name}")
        for purpose_name in rule.purposes:
            need("purpose", purpose_name, purposes, f"break_glass.{dept_name}")
    retention = docs.get("retention")
    if retention is not None:
        for dataset in retention.datasets:
            need("dataset", dataset, datasets, "retention.datasets")
    return problems
