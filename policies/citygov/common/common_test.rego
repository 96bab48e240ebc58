package citygov.common_test

import rego.v1

import data.citygov.common

test_instant_accepts_z_and_offset if {
	common.instant_ns("2026-11-20T12:00:00Z") == common.instant_ns("2026-11-20T13:00:00+01:00")
}

test_now_comes_from_the_input if {
	common.now_ns == 1795176000000000000 with input as {"context": {"time": "2026-11-20T12:00:00+00:00"}}
}

test_purpose_within_its_ancestors if {
	common.purpose_within("care.monitoring", "care")
	common.purpose_within("care.monitoring", "care.monitoring")
}

test_purpose_not_within_a_sibling if {
	not common.purpose_within("care.monitoring", "care.alerting")
	not common.purpose_within("care", "care.monitoring")
}

test_unknown_field_counts_as_personal if {
	classes := common.field_classes with input as {"dataset": "lighting.traffic-flow", "fields": ["licence_plate", "intensity"]}
	classes == {"licence_plate": "personal", "intensity": "public"}
}

test_level_of_fields_is_the_most_sensitive if {
	level := common.level_of(["id", "type", "numValue"]) with input as {"dataset": "care.observation", "fields": ["id", "type", "numValue"]}
	level == "special-category"
}

test_level_of_no_fields_is_public if {
	common.level_of([]) == "public"
}

test_special_category_needs_consent_or_vital_interest if {
	common.basis_sufficient("consent", "special-category")
	common.basis_sufficient("vital-interest", "special-category")
	not common.basis_sufficient("public-task", "special-category")
	common.basis_sufficient("public-task", "personal")
	not common.basis_sufficient("made-up", "personal")
}
