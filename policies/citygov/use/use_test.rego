package citygov.use_test

import rego.v1

import data.citygov.use

request(department, purpose, dataset, fields) := {
	"stage": "use",
	"actor": {"kind": "department", "id": concat("", [department, "-analyst"]), "department": department, "roles": ["analyst"]},
	"purpose": purpose,
	"dataset": dataset,
	"fields": fields,
	"context": {"time": "2026-11-20T12:00:00Z", "channel": "api"},
}

has_reason(d, code) if {
	some r in d.reasons
	r.code == code
}

resident_observations := request("social-care", "care.monitoring", "care.observation", ["numValue", "refResident"])

consent_established := object.union(resident_observations, {"subject": {"id": "urn:ngsi-ld:Person:R-1"}, "consent": {"purpose": "care", "given": true}})

consent_refused := object.union(resident_observations, {"consent": {"purpose": "care.monitoring", "given": false}})

device_entitlement_without_basis := {"environment": {
	"owns": ["monitoring"],
	"entitlements": [{"datasets": ["monitoring.device"], "purposes": ["environment"], "fields": "*"}],
}}

test_energy_uses_lighting_data_for_its_purposes if {
	d := use.decision with input as request("energy", "energy.maintenance", "lighting.streetlight", ["id", "type", "status", "powerState"])
	d.allow
	count(d.obligations) == 0
}

test_energy_gets_only_the_traffic_fields_it_is_entitled_to if {
	d := use.decision with input as request("energy", "energy.management", "lighting.traffic-flow", ["id", "type", "intensity", "averageVehicleSpeed", "vehicleType"])
	d.allow
	{"kind": "drop_fields", "fields": ["averageVehicleSpeed", "vehicleType"]} in d.obligations
}

test_energy_may_not_use_care_data if {
	d := use.decision with input as request("energy", "energy.management", "care.alert", ["id", "type", "category"])
	not d.allow
	has_reason(d, "not_entitled")
}

test_purpose_outside_the_entitlement_is_refused if {
	d := use.decision with input as request("energy", "transport.planning", "lighting.traffic-flow", ["intensity"])
	not d.allow
	has_reason(d, "not_entitled")
}

test_social_care_uses_alerts_only_with_each_residents_consent if {
	d := use.decision with input as request("social-care", "care.monitoring", "care.alert", ["id", "type", "category", "refResident", "dateIssued"])
	d.allow
	{"kind": "require_consent", "purpose": "care.monitoring", "subject_field": "refResident"} in d.obligations
}

test_consent_already_established_needs_no_per_record_check if {
	d := use.decision with input as consent_established
	d.allow
	every o in d.obligations {
		o.kind != "require_consent"
	}
}

test_refused_consent_is_a_deny if {
	d := use.decision with input as consent_refused
	not d.allow
	has_reason(d, "consent_refused")
}

test_external_recipients_do_not_use_they_share if {
	d := use.decision with input as object.union(request("energy", "energy", "lighting.streetlight", ["status"]), {"actor": {"kind": "external", "id": "vendor"}})
	not d.allow
	has_reason(d, "not_a_department")
}

test_unknown_purpose_is_refused if {
	d := use.decision with input as request("energy", "marketing", "lighting.streetlight", ["status"])
	not d.allow
	has_reason(d, "unknown_purpose")
}

test_personal_data_without_basis_is_refused if {
	d := use.decision with input as request("environment", "environment.monitoring", "monitoring.device", ["id", "location", "serialNumber"]) with data.city.departments as device_entitlement_without_basis
	not d.allow
	has_reason(d, "no_legal_basis")
}
