"""Both engines on the shipped policies, and the fail-closed behaviour of each way a decision can fail."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from governance.config import Settings
from governance.errors import ConfigurationError
from governance.policy.bundle import PolicyBundle, load_folder
from governance.policy.embedded import EmbeddedEngine
from governance.policy.engine import FailClosedEngine, make_engine
from governance.policy.model import Decision, PolicyInput, Stage
from governance.policy.opa import OpaEngine
from tests.policies.fake_opa import running_fake_opa
from tests.policies.helpers import collection, representative_inputs, sharing, tricky_policies, use

# --- the embedded engine on the shipped policies ------------------------------------------------


def test_embedded_collection_drops_fields_a_source_may_not_send(embedded: EmbeddedEngine) -> None:
    decision = embedded.decide(collection("streetlight-json", "lighting.streetlight", ["id", "type", "owner"]))
    assert decision.allow and decision.failure is None
    assert [o.model_dump() for o in decision.obligations] == [{"kind": "drop_fields", "fields": ("owner",)}]
    assert decision.revision == embedded.revision


def test_embedded_care_observation_carries_per_subject_consent(embedded: EmbeddedEngine) -> None:
    decision = embedded.decide(collection("care-hub", "care.observation", ["id", "refResident", "numValue"],
                                          subject="refResident"))
    assert decision.allow
    consent = decision.of_kind("require_consent")
    assert [o.model_dump() for o in consent] == [
        {"kind": "require_consent", "purpose": "care.monitoring", "subject_field": "refResident", "recipient": None}]


def test_embedded_refusal_of_special_category_data_is_flagged_for_discarding(embedded: EmbeddedEngine) -> None:
    decision = embedded.decide(collection("streetlight-json", "care.alert", ["id", "category"]))
    assert not decision.allow
    assert [r.code for r in decision.reasons] == ["source_not_allowed"]
    assert decision.flags == ("discard_payload",)


def test_embedded_break_glass_is_flagged(embedded: EmbeddedEngine) -> None:
    dispatcher = {"kind": "department", "id": "d-7", "department": "emergency-services", "roles": ["dispatcher"]}
    decision = embedded.decide(sharing(dispatcher, "emergency.response", "care.alert", ["id", "location"],
                                       break_glass=True))
    assert decision.allow and set(decision.flags) == {"break_glass", "vital_interest"}


def test_decisions_are_pure_functions_of_the_input(embedded: EmbeddedEngine) -> None:
    lab = {"kind": "external", "id": "university-mobility-lab"}
    inside = sharing(lab, "research.mobility", "lighting.traffic-flow", ["intensity"], "dsa-2026-001")
    outside = sharing(lab, "research.mobility", "lighting.traffic-flow", ["intensity"], "dsa-2026-001",
                      time="2027-01-01T00:00:00Z")
    assert embedded.decide(inside) == embedded.decide(inside)
    assert embedded.decide(inside).allow
    assert [r.code for r in embedded.decide(outside).reasons] == ["agreement_not_in_force"]


def test_each_thread_gets_its_own_interpreter_and_the_same_decisions(embedded: EmbeddedEngine) -> None:
    inputs = representative_inputs()
    expected = [embedded.decide(i) for i in inputs]
    seen: list[list[Decision]] = []

    def work() -> None:
        seen.append([embedded.decide(i) for i in inputs * 3][: len(inputs)])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [expected] * 4


def test_embedded_engine_is_selected_by_default(bundle: PolicyBundle, tmp_path: Path) -> None:
    engine = make_engine(Settings(data_dir=tmp_path), bundle)
    assert isinstance(engine, EmbeddedEngine)
    with pytest.raises(ConfigurationError, match="CITYGOV_OPA_URL"):
        make_engine(Settings(data_dir=tmp_path, policy_engine="opa"), bundle)


# --- fail closed ------------------------------------------------------------------------------------


def _engine_for(tmp_path: Path, collection_rego: str, **kwargs: Any) -> EmbeddedEngine:
    return EmbeddedEngine(load_folder(tricky_policies(tmp_path / "policies", collection_rego)), **kwargs)


def _denied(decision: Decision, failure: str) -> None:
    assert not decision.allow
    assert decision.failure == failure
    assert [r.code for r in decision.reasons] == [f"policy_{failure}"]
    assert decision.obligations == ()


FEED = collection("streetlight-json", "lighting.streetlight", ["id"])


def test_undefined_decision_is_a_deny(tmp_path: Path) -> None:
    engine = _engine_for(tmp_path, 'package citygov.collection\n\nimport rego.v1\n\n'
                                   'decision := {"allow": true} if input.never\n')
    _denied(engine.decide(FEED), "undefined")


def test_malformed_decision_is_a_deny(tmp_path: Path) -> None:
    engine = _engine_for(tmp_path, 'package citygov.collection\n\nimport rego.v1\n\n'
                                   'decision := {"allow": "yes", "reasons": []}\n')
    _denied(engine.decide(FEED), "malformed")


def test_obligation_of_an_unknown_kind_makes_the_decision_malformed(tmp_path: Path) -> None:
    engine = _engine_for(tmp_path, 'package citygov.collection\n\nimport rego.v1\n\n'
                                   'decision := {"allow": true, "reasons": [], '
                                   '"obligations": [{"kind": "teleport_fields", "fields": ["id"]}]}\n')
    decision = engine.decide(FEED)
    _denied(decision, "malformed")
    assert "obligations" in decision.reasons[0].detail


def test_deny_without_a_reason_is_malformed(tmp_path: Path) -> None:
    engine = _engine_for(tmp_path, 'package citygov.collection\n\nimport rego.v1\n\n'
                                   'decision := {"allow": false, "reasons": []}\n')
    _denied(engine.decide(FEED), "malformed")


def test_evaluation_error_is_a_deny(tmp_path: Path) -> None:
    # two values for one complete rule: OPA and rego-cpp both fail the evaluation
    engine = _engine_for(tmp_path, 'package citygov.collection\n\nimport rego.v1\n\n'
                                   'decision := {"allow": true, "reasons": []} if input.dataset\n'
                                   'decision := {"allow": false, "reasons": []} if input.dataset\n')
    _denied(engine.decide(FEED), "engine_error")


def test_slow_decision_is_a_timeout_deny(tmp_path: Path) -> None:
    slow = ('package citygov.collection\n\nimport rego.v1\n\n'
            'n := count([x | some x in numbers.range(1, 200000)])\n'
            'decision := {"allow": n > 0, "reasons": [{"code": "ok", "detail": ""}]}\n')
    engine = _engine_for(tmp_path, slow, timeout_ms=20)
    _denied(engine.decide(FEED), "timeout")


def test_an_engine_that_raises_denies_instead(bundle: PolicyBundle) -> None:
    class Broken(FailClosedEngine):
        name = "broken"

        def _query(self, stage: Stage, document: dict[str, Any]) -> Any:
            raise RuntimeError("boom")

    _denied(Broken(bundle).decide(FEED), "engine_error")


# --- the OPA engine against a fake OPA server (no OPA binary can run here) ----------------------------


def test_opa_engine_against_fake_opa_server_gives_the_embedded_decisions(embedded: EmbeddedEngine,
                                                                         bundle: PolicyBundle) -> None:
    with running_fake_opa() as (opa, url):
        engine = OpaEngine(bundle, url)
        for policy_input in representative_inputs():
            assert engine.decide(policy_input) == embedded.decide(policy_input), policy_input
        assert opa.data["citygov_bundle"] == {"revision": bundle.revision}
        assert set(opa.policies) == {f"citygov/{p}" for p in bundle.modules} | {"citygov/_envelope.rego"}
        assert opa.data["city"]["datasets"]["care.observation"]["fields"]["numValue"] == "special-category"


def test_opa_engine_against_fake_opa_server_removes_policies_of_older_revisions(bundle: PolicyBundle) -> None:
    with running_fake_opa() as (opa, url):
        opa.set_policy("citygov/citygov/retired/retired.rego", "package citygov.retired\n")
        opa.set_policy("someone-else/policy.rego", "package other\n")
        OpaEngine(bundle, url).publish()
        assert "citygov/citygov/retired/retired.rego" not in opa.policies
        assert "someone-else/policy.rego" in opa.policies


def test_opa_engine_against_fake_opa_server_refuses_another_revision(bundle: PolicyBundle) -> None:
    with running_fake_opa() as (opa, url):
        engine = OpaEngine(bundle, url)
        assert engine.decide(FEED).allow
        opa.set_data("citygov_bundle", {"revision": "0" * 64})
        _denied(engine.decide(FEED), "revision_mismatch")


@pytest.mark.parametrize(("mode", "failure"), [("down", "engine_error"), ("garbage", "malformed"),
                                               ("undefined", "undefined"), ("slow", "timeout")])
def test_opa_engine_against_fake_opa_server_fails_closed(bundle: PolicyBundle, mode: str, failure: str) -> None:
    with running_fake_opa() as (opa, url):
        engine = OpaEngine(bundle, url, timeout_ms=300)
        engine.publish()
        opa.mode = mode
        opa.slow_seconds = 1.0
        _denied(engine.decide(FEED), failure)


def test_opa_engine_against_fake_opa_server_stops_asking_for_a_while_after_a_timeout(bundle: PolicyBundle) -> None:
    with running_fake_opa() as (opa, url):
        engine = OpaEngine(bundle, url, timeout_ms=200)
        engine.publish()
        opa.mode, opa.slow_seconds = "slow", 0.5
        _denied(engine.decide(FEED), "timeout")
        asked = opa.queries
        started = time.perf_counter()
        _denied(engine.decide(FEED), "unavailable")  # at once, without waiting for another timeout
        assert opa.queries == asked and time.perf_counter() - started < 0.1


def test_opa_engine_against_fake_opa_server_republishes_after_a_restart(bundle: PolicyBundle) -> None:
    with running_fake_opa() as (opa, url):
        engine = OpaEngine(bundle, url)
        assert engine.decide(FEED).allow
        opa.mode = "amnesia"  # the server loses everything, as a restarted OPA does
        _denied(engine.decide(FEED), "undefined")
        assert engine.decide(FEED).allow  # published again before this decision


def test_opa_engine_with_no_server_denies_as_unavailable(bundle: PolicyBundle) -> None:
    with running_fake_opa() as (_, url):
        pass  # the port is closed now
    decision = OpaEngine(bundle, url, timeout_ms=500).decide(FEED)
    _denied(decision, "unavailable")


# --- a real OPA server, when one is configured ---------------------------------------------------------

OPA_URL = os.environ.get("CITYGOV_OPA_URL")


@pytest.mark.skipif(not OPA_URL, reason="no OPA server: set CITYGOV_OPA_URL to run the real-OPA parity test")
def test_real_opa_gives_the_embedded_decisions(embedded: EmbeddedEngine, bundle: PolicyBundle) -> None:
    assert OPA_URL is not None
    engine = OpaEngine(bundle, OPA_URL)
    for policy_input in representative_inputs():
        assert engine.decide(policy_input) == embedded.decide(policy_input), policy_input


@pytest.mark.skipif(not OPA_URL, reason="no OPA server: set CITYGOV_OPA_URL to run the real-OPA test")
def test_real_opa_denies_a_use_outside_the_entitlement(bundle: PolicyBundle) -> None:
    assert OPA_URL is not None
    decision = OpaEngine(bundle, OPA_URL).decide(use("energy", "energy", "care.alert", ["id"]))
    assert not decision.allow and decision.failure is None
    assert [r.code for r in decision.reasons] == ["not_entitled"]


def test_input_time_reaches_the_policies_without_a_trailing_z() -> None:
    document = collection("streetlight-json", "lighting.streetlight", ["id"]).document()
    assert document["context"]["time"] == "2026-11-20T12:00:00+00:00"
    assert "subject" not in document  # unset means absent, not null
    with pytest.raises(ValueError, match="timezone"):
        PolicyInput.model_validate({**document, "context": {"time": "2026-11-20T12:00:00"}})
