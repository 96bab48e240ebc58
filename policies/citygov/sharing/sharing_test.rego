package citygov.sharing_test

import rego.v1

import data.citygov.sharing

external(recipient, agreement, purpose, dataset, fields) := {
	"stage": "sharing",
	"actor": {"kind": "external", "id": recipient, "roles": []},
	"purpose": purpose,
	"dataset": dataset,
	"fields": fields,
	"agreement": agreement,
	"context": {"time": "2026-11-20T12:00:00Z", "channel": "api"},
}

dispatcher(fields, break_glass) := {
	"stage": "sharing",
	"actor": {"kind": "department", "id": "dispatch-07", "department": "emergency-services", "roles": ["dispatcher"]},
	"purpose": "emergency.response",
	"dataset": "care.alert",
	"fields": fields,
	"context": {"time": "2026-11-20T03:12:50Z", "channel": "api", "break_glass": break_glass},
}

has_reason(d, code) if {
	some r in d.reasons
	r.code == code
}

mobility(fields) := external("university-mobility-lab", "dsa-2026-001", "research.mobility", "lighting.traffic-flow", fields)

falls_research(fields) := external("public-health-institute", "dsa-2026-002", "research.public-health", "care.alert", fields)

without_agreement := object.remove(mobility(["intensity"]), ["agreement"])

after_the_period := object.union(mobility(["intensity"]), {"context": {"time": "2027-01-01T00:00:00Z"}})

falls_agreement_without_safeguards := {"dsa-2026-002": object.union(data.city.agreements["dsa-2026-002"], {"obligations": []})}

mobility_agreement_signed_by_transport := {"dsa-2026-001": object.union(data.city.agreements["dsa-2026-001"], {"provider": "transport"})}

transport_planner := {
	"stage": "sharing",
	"actor": {"kind": "department", "id": "planner-3", "department": "transport"},
	"purpose": "transport.planning",
	"dataset": "monitoring.noise",
	"fields": ["LAeq", "location"],
	"agreement": "dsa-2026-003",
	"context": {"time": "2026-11-20T12:00:00Z"},
}

clerk := object.union(dispatcher(["id", "location"], true), {"actor": {"kind": "department", "id": "x", "department": "emergency-services", "roles": ["clerk"]}})

energy_dispatcher := object.union(dispatcher(["id", "location"], true), {"actor": {"kind": "department", "id": "e1", "department": "energy", "roles": ["dispatcher"]}})

test_mobility_lab_gets_generalized_traffic_data if {
	d := sharing.decision with input as mobility(["id", "type", "location", "intensity", "dateObservedFrom", "dateObservedTo", "refRoadSegment"])
	d.allow
	{"kind": "generalize_location", "field": "location", "grid_m": 250} in d.obligations
	{"kind": "drop_fields", "fields": ["refRoadSegment"]} in d.obligations
}

test_no_agreement_no_sharing if {
	d := sharing.decision with input as without_agreement
	not d.allow
	has_reason(d, "no_agreement")
}

test_only_the_recipient_may_invoke_an_agreement if {
	d := sharing.decision with input as external("someone-else", "dsa-2026-001", "research.mobility", "lighting.traffic-flow", ["intensity"])
	not d.allow
	has_reason(d, "recipient_not_party")
}

test_purpose_and_dataset_must_be_covered if {
	d := sharing.decision with input as external("university-mobility-lab", "dsa-2026-001", "transport.planning", "monitoring.noise", ["LAeq"])
	has_reason(d, "purpose_not_covered")
	has_reason(d, "dataset_not_covered")
}

test_agreement_outside_its_period_is_refused if {
	d := sharing.decision with input as after_the_period
	not d.allow
	has_reason(d, "agreement_not_in_force")
}

test_falls_research_is_aggregate_only_with_k_10_and_no_identifiers if {
	d := sharing.decision with input as falls_research(["id", "type", "subCategory", "dateIssued", "location", "refResident"])
	d.allow
	{"kind": "k_anonymity", "k": 10, "quasi_identifiers": ["location", "dateIssued"]} in d.obligations
	some o in d.obligations
	o.kind == "aggregate_only"
	{"kind": "drop_fields", "fields": ["id", "refResident"]} in d.obligations
}

test_personal_data_without_consent_or_anonymization_is_refused if {
	d := sharing.decision with input as falls_research(["subCategory", "location"]) with data.city.agreements as falls_agreement_without_safeguards
	not d.allow
	has_reason(d, "personal_data_unprotected")
}

test_consent_based_sharing_checks_consent_and_pseudonymizes_per_recipient if {
	d := sharing.decision with input as external("gp-practice-centro", "dsa-2026-004", "care.monitoring", "care.observation", ["id", "type", "numValue", "observationType", "refResident", "dateObserved"])
	d.allow
	{"kind": "require_consent", "purpose": "care.monitoring", "subject_field": "refResident", "recipient": "gp-practice-centro"} in d.obligations
	{"kind": "pseudonymize", "fields": ["refResident"], "recipient": "gp-practice-centro"} in d.obligations
}

test_department_to_department_needs_an_agreement_too if {
	d := sharing.decision with input as transport_planner
	d.allow
}

test_agreement_signed_by_a_department_that_does_not_own_the_data_is_refused if {
	d := sharing.decision with input as mobility(["intensity"]) with data.city.agreements as mobility_agreement_signed_by_transport
	not d.allow
	has_reason(d, "provider_not_owner")
}

test_emergency_services_get_fall_alerts_under_break_glass_flagged if {
	d := sharing.decision with input as dispatcher(["id", "type", "subCategory", "location", "refResident", "dateIssued"], true)
	d.allow
	"break_glass" in d.flags
	"vital_interest" in d.flags
	count(d.obligations) == 0
}

test_break_glass_fields_are_limited if {
	d := sharing.decision with input as dispatcher(["id", "type", "location", "data"], true)
	{"kind": "drop_fields", "fields": ["data"]} in d.obligations
}

test_break_glass_needs_the_dispatcher_role if {
	d := sharing.decision with input as clerk
	not d.allow
	has_reason(d, "break_glass_refused")
}

test_without_break_glass_emergency_services_need_an_agreement if {
	d := sharing.decision with input as dispatcher(["id", "location"], false)
	not d.allow
	has_reason(d, "no_agreement")
}

test_break_glass_is_only_for_emergency_services if {
	d := sharing.decision with input as energy_dispatcher
	not d.allow
}
