"""Bundles: revision by content hash, classification generated from the schemas, the store, the guards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from governance.catalog import SchemaCatalog, default_catalog
from governance.config import Settings
from governance.policy.bundle import (
    GENERATED_DATASETS,
    BundleStore,
    PolicyBundle,
    active_bundle,
    datasets_document,
    load_bundle_dir,
    load_folder,
)
from governance.policy.embedded import EmbeddedEngine
from governance.policy.errors import PolicyBundleError, UnknownRevisionError
from governance.policy.lint import lint_module
from governance.resources import data_folder
from tests.policies.helpers import collection, copy_policies, edit_json, tricky_policies


def test_revision_is_a_content_hash_of_what_decides(bundle: PolicyBundle, tmp_path: Path) -> None:
    assert load_folder().revision == bundle.revision
    assert len(bundle.revision) == 64
    folder = copy_policies(tmp_path / "policies")
    (folder / "citygov" / "collection" / "collection_test.rego").write_text(
        "package citygov.collection_test\n\nimport rego.v1\n\ntest_nothing if true\n")
    assert load_folder(folder).revision == bundle.revision  # tests do not decide anything
    edit_json(folder / "data" / "retention.json", lambda d: d["retention"]["classification"].update(public=3000))
    assert load_folder(folder).revision != bundle.revision


def test_dataset_classification_comes_from_the_schemas(bundle: PolicyBundle, tmp_path: Path) -> None:
    datasets = bundle.data["city"]["datasets"]
    alert = default_catalog().get("Alert")
    assert datasets["care.alert"]["fields"] == {k: v.value for k, v in alert.classification.items()}
    assert datasets["care.alert"]["subject_property"] == "refResident"
    assert not (data_folder("policies") / "data" / "datasets.json").exists()  # generated, never a file
    schemas = tmp_path / "schemas"
    shutil.copytree(data_folder("schemas"), schemas)
    path = schemas / "Streetlight.schema.json"
    document = json.loads(path.read_text())
    document["properties"]["powerState"]["x-classification"] = "personal"
    path.write_text(json.dumps(document))
    changed = load_folder(catalog=SchemaCatalog.load(schemas))
    assert changed.revision != bundle.revision
    assert changed.data["city"]["datasets"]["lighting.streetlight"]["fields"]["powerState"] == "personal"
    decision = EmbeddedEngine(changed).decide(
        collection("streetlight-json", "lighting.streetlight", ["id", "type", "powerState"]))
    assert [o.model_dump() for o in decision.obligations] == [{"kind": "drop_fields", "fields": ("powerState",)}]


def test_store_keeps_every_revision_and_loads_it_back(bundle: PolicyBundle, tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "policy-bundles")
    path = store.save(bundle)
    assert path == tmp_path / "policy-bundles" / bundle.revision
    assert store.save(bundle) == path  # idempotent
    again = store.load(bundle.revision)
    assert again.revision == bundle.revision and again.files == bundle.files
    assert (path / GENERATED_DATASETS).is_file()
    assert store.revisions() == [bundle.revision]


def test_a_stored_revision_decides_as_it_did_after_the_schemas_change(bundle: PolicyBundle, tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "store")
    store.save(bundle)
    stored = store.load(bundle.revision)
    assert stored.data == bundle.data
    assert stored.files[GENERATED_DATASETS] == bundle.files[GENERATED_DATASETS]


def test_an_altered_stored_bundle_is_refused(bundle: PolicyBundle, tmp_path: Path) -> None:
    store = BundleStore(tmp_path)
    path = store.save(bundle)
    target = path / "data" / "agreements.json"
    target.write_text(target.read_text().replace('"k": 10', '"k": 2'))
    with pytest.raises(PolicyBundleError, match="does not match its manifest"):
        store.load(bundle.revision)


def test_unknown_or_invalid_revisions_are_refused(tmp_path: Path) -> None:
    store = BundleStore(tmp_path)
    with pytest.raises(UnknownRevisionError):
        store.load("a" * 64)
    with pytest.raises(UnknownRevisionError, match="64 hex"):
        store.load("../../etc")


def test_active_bundle_is_stored_or_pinned(bundle: PolicyBundle, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert active_bundle(settings).revision == bundle.revision
    assert BundleStore.for_settings(settings).revisions() == [bundle.revision]
    pinned = Settings(data_dir=tmp_path, policy_revision=bundle.revision, policy_dir=tmp_path / "nowhere")
    assert active_bundle(pinned).revision == bundle.revision


def test_bundle_written_out_loads_as_the_same_revision(bundle: PolicyBundle, tmp_path: Path) -> None:
    bundle.write(tmp_path / "out")
    assert load_bundle_dir(tmp_path / "out").revision == bundle.revision


def test_generated_document_covers_every_dataset() -> None:
    datasets = datasets_document(default_catalog())["datasets"]
    assert {"care.alert", "care.observation", "lighting.traffic-flow", "monitoring.device"} <= set(datasets)
    assert datasets["care.observation"]["observed_at"] == "dateObserved"


# --- guards against the embedded engine's quirks -----------------------------------------------------


@pytest.mark.parametrize(("source", "problem"), [
    ("allow {\n  input.ok\n}\n", "v0 rule body"),
    ("deny[msg] {\n  msg := \"x\"\n}\n", "v0 rule body"),
    ("f(x) = y {\n  y := x\n}\n", "v0 rule body"),
    ("t := time.now_ns()\n", "unreplayable"),
    ('m := sprintf("%q", [input.x])\n', "%q"),
    ('m := sprintf("%s", [concat(",", input.xs)])\n', "computed by a builtin"),
    ("xs := [x | some x in input.a; data.p.q with input as {}]\n", "inside a comprehension"),
    ("# METADATA\n# owner: privacy office\nallow := true\n", "METADATA key 'owner'"),
])
def test_quirk_guards_name_the_line(source: str, problem: str) -> None:
    problems = lint_module("p.rego", "package p\n\nimport rego.v1\n\n" + source)
    assert len(problems) == 1 and problems[0].startswith(("p.rego:5:", "p.rego:6:")) and problem in problems[0]


def test_guards_accept_v1_rules_and_literals() -> None:
    source = ('package p\n\nimport rego.v1\n\ndecision := {\n\t"allow": allow,\n}\n\nallow if input.ok\n\n'
              'deny contains "x" if {\n\tnot allow\n}\n\nf(x) := object.union(x, {"a": 1})\n'
              '# allow { in a comment }\nmsg := "allow { in a string }"\n')
    assert lint_module("p.rego", source) == []


def test_a_bundle_with_v0_syntax_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(PolicyBundleError, match=r"collection\.rego:5: Rego v0"):
        load_folder(tricky_policies(tmp_path / "p", "package citygov.collection\n\nimport rego.v1\n\n"
                                                    "decision {\n  true\n}\n"))


def test_a_syntax_error_is_reported_with_its_line_not_a_crash(tmp_path: Path) -> None:
    bundle = load_folder(tricky_policies(tmp_path / "p", "package citygov.collection\n\nimport rego.v1\n\n"
                                                         "decision := {\"allow\": }\n"))
    with pytest.raises(PolicyBundleError, match=r"citygov/collection/collection\.rego:5"):
        EmbeddedEngine(bundle)


# --- data documents -----------------------------------------------------------------------------------


def test_a_data_document_naming_an_unknown_purpose_is_refused(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path / "policies")
    edit_json(folder / "data" / "sources.json",
              lambda d: d["sources"]["care-hub"]["datasets"]["care.alert"].update(purpose="care.marketing"))
    with pytest.raises(PolicyBundleError, match=r"unknown purpose 'care\.marketing'"):
        load_folder(folder)


def test_an_agreement_with_a_malformed_obligation_is_refused(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path / "policies")
    edit_json(folder / "data" / "agreements.json",
              lambda d: d["agreements"]["dsa-2026-002"]["obligations"].append({"kind": "k_anonymity", "k": 1,
                                                                              "quasi_identifiers": ["location"]}))
    with pytest.raises(PolicyBundleError, match="agreements"):
        load_folder(folder)


def test_two_documents_defining_one_key_are_refused(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path / "policies")
    (folder / "data" / "more.json").write_text('{"purposes": {}}')
    with pytest.raises(PolicyBundleError, match="already defined"):
        load_folder(folder)
