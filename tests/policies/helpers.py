"""Inputs and folders shared by the policy tests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson

from governance.policy.model import PolicyInput

POLICIES = Path(__file__).parents[2] / "policies"
TIME = "2026-11-20T12:00:00Z"


def collection(source: str, dataset: str, fields: list[str], subject: str | None = None) -> PolicyInput:
    document: dict[str, Any] = {"stage": "collection", "actor": {"kind": "source", "id": source},
                                "dataset": dataset, "fields": fields, "context": {"time": TIME, "channel": "mqtt"}}
    if subject:
        document["subject"] = {"property": subject}
    return PolicyInput.model_validate(document)


def use(department: str, purpose: str, dataset: str, fields: list[str], **extra: Any) -> PolicyInput:
    return PolicyInput.model_validate({
        "stage": "use", "actor": {"kind": "department", "id": f"{department}-1", "department": department},
        "purpose": purpose, "dataset": dataset, "fields": fields, "context": {"time": TIME}, **extra})


def sharing(actor: dict[str, Any], purpose: str, dataset: str, fields: list[str], agreement: str | None = None,
            *, time: str = TIME, break_glass: bool = False) -> PolicyInput:
    document: dict[str, Any] = {"stage": "sharing", "actor": actor, "purpose": purpose, "dataset": dataset,
                                "fields": fields, "context": {"time": time, "break_glass": break_glass}}
    if agreement:
        document["agreement"] = agreement
    return PolicyInput.model_validate(document)


def storage(dataset: str, fields: list[str], form: str = "raw") -> PolicyInput:
    return PolicyInput.model_validate({
        "stage": "storage", "actor": {"kind": "service", "id": "store"}, "dataset": dataset, "fields": fields,
        "context": {"time": TIME, "form": form}})


def representative_inputs() -> list[PolicyInput]:
    """One input per interesting path of each stage: allows, denies, obligations, flags."""
    lab = {"kind": "external", "id": "university-mobility-lab"}
    institute = {"kind": "external", "id": "public-health-institute"}
    dispatcher = {"kind": "department", "id": "d-7", "department": "emergency-services", "roles": ["dispatcher"]}
    return [
        collection("streetlight-json", "lighting.streetlight", ["id", "type", "status", "owner"]),
        collection("care-hub", "care.observation", ["id", "type", "refResident", "numValue"], subject="refResident"),
        collection("care-hub", "care.observation", ["id", "type", "numValue"]),
        collection("care-hub", "care.alert", ["id", "type", "category", "refResident"], subject="refResident"),
        collection("streetlight-json", "care.alert", ["id", "type", "category"]),
        storage("care.observation", ["id", "type", "refResident", "numValue", "dateObserved"]),
        storage("monitoring.noise", ["id", "type", "LAeq"], form="aggregate"),
        use("energy", "energy.management", "lighting.traffic-flow", ["id", "intensity", "vehicleType"]),
        use("social-care", "care.monitoring", "care.alert", ["id", "refResident", "category"]),
        use("energy", "energy", "care.alert", ["id"]),
        sharing(lab, "research.mobility", "lighting.traffic-flow", ["id", "location", "intensity", "refRoadSegment"],
                "dsa-2026-001"),
        sharing(lab, "research.mobility", "lighting.traffic-flow", ["intensity"], "dsa-2026-001",
                time="2027-02-01T00:00:00+00:00"),
        sharing(institute, "research.public-health", "care.alert", ["id", "subCategory", "location", "refResident"],
                "dsa-2026-002"),
        sharing(dispatcher, "emergency.response", "care.alert", ["id", "location", "data"], break_glass=True),
        sharing(dispatcher, "emergency.response", "care.alert", ["id", "location"]),
    ]


def copy_policies(target: Path) -> Path:
    """A private copy of the shipped policies folder, to edit in a test."""
    shutil.copytree(POLICIES, target)
    return target


def edit_json(path: Path, change: Any) -> None:
    document = orjson.loads(path.read_bytes())
    change(document)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))


MINIMAL_STAGE = """package citygov.{stage}

import rego.v1

decision := {{"allow": true, "reasons": [{{"code": "ok", "detail": ""}}], "obligations": [], "flags": []}}
"""


def tricky_policies(target: Path, collection_rego: str) -> Path:
    """A policies folder whose collection package is ``collection_rego``; the other stages simply allow."""
    (target / "data").mkdir(parents=True)
    for stage in ("collection", "storage", "use", "sharing"):
        folder = target / "citygov" / stage
        folder.mkdir(parents=True)
        source = collection_rego if stage == "collection" else MINIMAL_STAGE.format(stage=stage)
        (folder / f"{stage}.rego").write_text(source)
    return target
