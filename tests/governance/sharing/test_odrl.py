"""Agreements as ODRL Agreement policies: a faithful round trip, and strict refusal of what the profile lacks."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from governance.errors import InvalidRequestError
from governance.policy.bundle import load_folder
from governance.sharing.agreements import AgreementTerms
from governance.sharing.odrl import from_odrl as parse_odrl
from governance.sharing.odrl import to_odrl
from tests.governance.sharing.conftest import terms

FOLDER_AGREEMENTS = load_folder().data["city"]["agreements"]


@pytest.mark.parametrize("agreement_id", sorted(FOLDER_AGREEMENTS))
def test_every_shipped_agreement_survives_a_round_trip(agreement_id: str) -> None:
    original = AgreementTerms.from_policy_document(agreement_id, FOLDER_AGREEMENTS[agreement_id])
    exported = orjson.loads(orjson.dumps(to_odrl(original)))  # through JSON text, as a file would go
    assert parse_odrl(exported) == original
    assert parse_odrl(exported).policy_document() == original.policy_document()


def test_the_sharing_terms_and_every_obligation_kind_survive_too() -> None:
    original = terms("dsa-t-odrl", quota_per_day=250, epsilon_budget=1.5, datasets=["lighting.traffic-flow",
                                                                                   "lighting.crowd-flow"],
                     obligations=[
                         {"kind": "aggregate_only", "group_by": ["location"]},
                         {"kind": "noise_budget", "epsilon": 0.25, "delta": 1e-7},
                         {"kind": "k_anonymity", "k": 5, "quasi_identifiers": ["location", "dateObserved"]},
                         {"kind": "mask", "fields": ["id"], "keep_last": 2},
                         {"kind": "retention", "days": 30},
                     ])
    document = to_odrl(original)
    assert document["@type"] == "Agreement"
    assert document["assigner"]["uid"] == "urn:citygov:department:energy"
    assert document["assignee"]["uid"] == "urn:citygov:recipient:stats-office"
    assert [p["target"] for p in document["permission"]] == ["urn:citygov:dataset:lighting.traffic-flow",
                                                             "urn:citygov:dataset:lighting.crowd-flow"]
    actions = [d["action"] for d in document["permission"][0]["duty"]]
    assert actions == ["aggregate", "anonymize", "anonymize", "anonymize", "delete"]
    assert parse_odrl(orjson.loads(orjson.dumps(document))) == original


def exported() -> dict[str, Any]:
    return copy.deepcopy(to_odrl(terms("dsa-t-odrl", quota_per_day=10,
                                       obligations=[{"kind": "generalize_location", "grid_m": 500}])))


def _prohibition(d: dict[str, Any]) -> None:
    d["prohibition"] = [{"target": "urn:citygov:dataset:lighting.traffic-flow", "action": "distribute"}]


def _unknown_constraint(d: dict[str, Any]) -> None:
    for permission in d["permission"]:
        permission["constraint"].append({"leftOperand": "spatial", "operator": "eq", "rightOperand": "ES"})


def _disagreeing_permissions(d: dict[str, Any]) -> None:
    d["permission"].append(copy.deepcopy(d["permission"][0]))
    d["permission"][1]["target"] = "urn:citygov:dataset:lighting.crowd-flow"
    d["permission"][1]["constraint"] = d["permission"][1]["constraint"][:-1]  # drops the quota


def _duty_with_wrong_action(d: dict[str, Any]) -> None:
    d["permission"][0]["duty"][0]["action"] = "inform"


def _unknown_duty(d: dict[str, Any]) -> None:
    d["permission"][0]["duty"][0]["citygov:obligation"] = {"kind": "teleport"}


def _no_period(d: dict[str, Any]) -> None:
    d["permission"][0]["constraint"] = [c for c in d["permission"][0]["constraint"] if c["leftOperand"] != "dateTime"]


def _assigner_external(d: dict[str, Any]) -> None:
    d["assigner"]["uid"] = "urn:citygov:recipient:someone"


def _offer(d: dict[str, Any]) -> None:
    d["@type"] = "Offer"


def _bad_target(d: dict[str, Any]) -> None:
    d["permission"][0]["target"] = "http://example.org/anything"


def _bad_field_iri(d: dict[str, Any]) -> None:
    d["permission"][0]["constraint"][3]["rightOperand"] = ["location"]


def _not_an_object(d: dict[str, Any]) -> None:
    d["permission"] = "use everything"


@pytest.mark.parametrize("spoil", [
    _prohibition, _unknown_constraint, _disagreeing_permissions, _duty_with_wrong_action, _unknown_duty,
    _no_period, _assigner_external, _offer, _bad_target, _bad_field_iri, _not_an_object,
])
def test_anything_outside_the_profile_is_refused_not_skipped(spoil: Any) -> None:
    document = exported()
    spoil(document)
    with pytest.raises(InvalidRequestError):
        parse_odrl(document)


def test_wrong_types_in_values_are_refused() -> None:
    document = exported()
    document["permission"][0]["constraint"][4]["rightOperand"] = {"@value": "lots", "@type": "xsd:integer"}
    with pytest.raises(InvalidRequestError, match="quota_per_day"):
        parse_odrl(document)
    with pytest.raises(InvalidRequestError):
        parse_odrl(["not", "a", "policy"])  # type: ignore[arg-type]
