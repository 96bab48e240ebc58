package citygov.collection_test

import rego.v1

import data.citygov.collection

feed(source, dataset, fields) := {
	"stage": "collection",
	"actor": {"kind": "source", "id": source},
	"dataset": dataset,
	"fields": fields,
	"context": {"time": "2026-11-20T12:00:00Z", "channel": "mqtt"},
}

has_reason(d, code) if {
	some r in d.reasons
	r.code == code
}

observation_fields := ["id", "type", "refResident", "refDevice", "observationType", "numValue", "dateObserved"]

care_observations := object.union(feed("care-hub", "care.observation", observation_fields), {"subject": {"property": "refResident"}})

care_alerts := object.union(
	feed("care-hub", "care.alert", ["id", "type", "category", "subCategory", "refResident", "dateIssued"]),
	{"subject": {"property": "refResident"}},
)

sources_without_basis := {"care-hub": {"datasets": {"care.observation": {"purpose": "care.monitoring", "max_classification": "special-category"}}}}

sources_public_task := {"care-hub": {"datasets": {"care.observation": {"purpose": "care.monitoring", "max_classification": "special-category", "basis": "public-task"}}}}

test_streetlights_feed_lighting_data if {
	d := collection.decision with input as feed("streetlight-json", "lighting.streetlight", ["id", "type", "status", "powerState", "location"])
	d.allow
	count(d.obligations) == 0
	count(d.flags) == 0
}

test_a_source_feeds_only_its_registered_datasets if {
	d := collection.decision with input as feed("streetlight-json", "care.alert", ["id", "type", "category"])
	not d.allow
	has_reason(d, "source_not_allowed")
}

test_unregistered_source_is_refused if {
	d := collection.decision with input as feed("unknown-vendor", "lighting.streetlight", ["id", "type", "status"])
	not d.allow
	has_reason(d, "source_not_allowed")
}

test_personal_fields_are_dropped_from_lighting_feeds if {
	d := collection.decision with input as feed("streetlight-json", "lighting.streetlight", ["id", "type", "status", "owner"])
	d.allow
	{"kind": "drop_fields", "fields": ["owner"]} in d.obligations
}

test_identifiers_and_free_text_from_traffic_counters_are_dropped if {
	d := collection.decision with input as feed("traffic-counter", "lighting.traffic-flow", ["id", "type", "intensity", "description", "licencePlates"])
	d.allow
	{"kind": "drop_fields", "fields": ["description", "licencePlates"]} in d.obligations
}

test_care_observations_need_each_residents_consent if {
	d := collection.decision with input as care_observations
	d.allow
	{"kind": "require_consent", "purpose": "care.monitoring", "subject_field": "refResident"} in d.obligations
}

test_consent_basis_without_a_named_subject_is_no_legal_basis if {
	d := collection.decision with input as feed("care-hub", "care.observation", ["id", "type", "numValue", "dateObserved"])
	not d.allow
	has_reason(d, "no_legal_basis")
	"discard_payload" in d.flags
}

test_care_alerts_are_collected_under_vital_interest_and_flagged if {
	d := collection.decision with input as care_alerts
	d.allow
	"vital_interest" in d.flags
	every o in d.obligations {
		o.kind != "require_consent"
	}
}

test_special_category_data_without_a_basis_is_refused_and_not_kept if {
	d := collection.decision with input as care_observations with data.city.sources as sources_without_basis
	not d.allow
	has_reason(d, "no_legal_basis")
	"discard_payload" in d.flags
}

test_public_task_is_not_enough_for_special_category_data if {
	d := collection.decision with input as care_observations with data.city.sources as sources_public_task
	not d.allow
	has_reason(d, "no_legal_basis")
}

test_device_metadata_is_personal_on_the_basis_of_public_task if {
	d := collection.decision with input as feed("ttn-v3", "monitoring.device", ["id", "type", "location", "batteryLevel", "rssi"])
	d.allow
	has_reason(d, "legal_basis")
}

test_refusal_of_non_personal_data_keeps_the_payload if {
	d := collection.decision with input as feed("unknown-vendor", "monitoring.weather", ["id", "type", "temperature"])
	not d.allow
	not "discard_payload" in d.flags
}

test_only_sources_collect if {
	d := collection.decision with input as object.union(feed("streetlight-json", "lighting.streetlight", ["status"]), {"actor": {"kind": "department", "id": "energy"}})
	not d.allow
	has_reason(d, "not_a_source")
}

test_unknown_dataset_is_refused if {
	d := collection.decision with input as feed("streetlight-json", "lighting.nothing", ["status"])
	not d.allow
	has_reason(d, "unknown_dataset")
}
