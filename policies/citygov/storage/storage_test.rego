package citygov.storage_test

import rego.v1

import data.citygov.storage

stored(dataset, fields) := {
	"stage": "storage",
	"actor": {"kind": "service", "id": "store"},
	"dataset": dataset,
	"fields": fields,
	"context": {"time": "2026-11-20T12:00:00Z"},
}

test_raw_care_observations_are_kept_30_days if {
	d := storage.decision with input as stored("care.observation", ["id", "type", "refResident", "numValue", "dateObserved"])
	d.allow
	{"kind": "retention", "days": 30} in d.obligations
}

test_care_aggregates_are_kept_longer if {
	d := storage.decision with input as object.union(stored("care.observation", ["numValue", "dateObserved"]), {"context": {"time": "2026-11-20T12:00:00Z", "form": "aggregate"}})
	{"kind": "retention", "days": 730} in d.obligations
}

test_retention_falls_back_to_the_classification if {
	d := storage.decision with input as stored("monitoring.noise", ["id", "type", "LAeq", "location"])
	{"kind": "retention", "days": 1825} in d.obligations
}

test_subject_pseudonymized_and_special_category_encrypted if {
	d := storage.decision with input as stored("care.observation", ["id", "type", "refResident", "numValue", "observationType", "dateObserved"])
	{"kind": "pseudonymize", "fields": ["refResident"], "recipient": "store"} in d.obligations
	{"kind": "encrypt_at_rest", "fields": ["dateObserved", "numValue", "observationType"]} in d.obligations
}

test_public_data_has_nothing_to_protect if {
	d := storage.decision with input as stored("monitoring.weather", ["id", "type", "temperature", "location"])
	d.allow
	every o in d.obligations {
		o.kind == "retention"
	}
}

test_unknown_form_is_refused if {
	d := storage.decision with input as object.union(stored("monitoring.weather", ["temperature"]), {"context": {"time": "2026-11-20T12:00:00Z", "form": "cooked"}})
	not d.allow
	some r in d.reasons
	r.code == "unknown_form"
}

test_only_services_store if {
	d := storage.decision with input as object.union(stored("monitoring.weather", ["temperature"]), {"actor": {"kind": "department", "id": "x"}})
	not d.allow
}

test_personal_fields_without_a_subject_are_noted_not_encrypted if {
	d := storage.decision with input as stored("monitoring.device", ["id", "type", "location", "batteryLevel"])
	d.allow
	every o in d.obligations {
		o.kind == "retention"
	}
	some r in d.reasons
	r.code == "personal_unkeyed"
	contains(r.detail, "location")
}
