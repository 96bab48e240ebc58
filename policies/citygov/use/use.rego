# METADATA
# title: Use
# description: >-
#   A department uses data it is entitled to, for its own purposes, with field-level limits. Data of
#   another department, or data for a purpose the department is not entitled to, needs a data-sharing
#   agreement (the sharing stage). Personal data on the basis of consent is used only with the
#   consent of each subject.
package citygov.use

import rego.v1

import data.citygov.common

# METADATA
# title: The use decision
# entrypoint: true
decision := {
	"allow": allow,
	"reasons": reasons,
	"obligations": obligations,
	"flags": set(),
}

default allow := false

allow if count(deny) == 0

reasons := deny if count(deny) > 0 else := notes

obligations := set() if count(deny) > 0 else := obligation

department := data.city.departments[input.actor.department]

# METADATA
# title: The department's entitlements that cover this dataset and purpose
entitlements contains e if {
	some e in department.entitlements
	input.dataset in e.datasets
	some granted in e.purposes
	common.purpose_within(input.purpose, granted)
}

all_fields if {
	some e in entitlements
	e.fields == "*"
}

allowed_fields contains name if {
	some e in entitlements
	is_array(e.fields)
	some name in e.fields
}

# METADATA
# title: Fields outside the entitlement are removed from what the department receives
dropped contains name if {
	not all_fields
	some name in input.fields
	not name in common.identity_fields
	not name in allowed_fields
}

kept := common.input_fields - dropped

level := common.level_of(kept)

personal if common.rank[level] >= common.rank.personal

bases contains basis if {
	some e in entitlements
	basis := e.basis
}

consent_basis if {
	personal
	"consent" in bases
}

deny contains common.reason("not_a_department", sprintf("the use stage is for city departments, not for a %s; other recipients need a data-sharing agreement", [input.actor.kind])) if {
	input.actor.kind != "department"
}

deny contains common.reason("unknown_department", sprintf("department %s is not in data.city.departments", [input.actor.department])) if {
	input.actor.kind == "department"
	not department
}

deny contains common.reason("unknown_dataset", sprintf("dataset %s is not in the catalog", [input.dataset])) if {
	not common.dataset
}

deny contains common.reason("no_purpose", "a use of data must state its purpose") if not input.purpose

deny contains common.reason("unknown_purpose", sprintf("purpose %s is not in data.city.purposes", [input.purpose])) if {
	input.purpose
	not common.known_purpose(input.purpose)
}

# METADATA
# title: A department uses only data it is entitled to, for its purposes
deny contains common.reason("not_entitled", sprintf("department %s is not entitled to %s for %s; data of another department needs a data-sharing agreement", [input.actor.department, input.dataset, input.purpose])) if {
	department
	common.dataset
	common.known_purpose(input.purpose)
	count(entitlements) == 0
}

deny contains common.reason("no_legal_basis", sprintf("%s data of %s needs a legal basis in the entitlement", [level, input.dataset])) if {
	count(entitlements) > 0
	personal
	not some_basis_sufficient
}

some_basis_sufficient if {
	some basis in bases
	common.basis_sufficient(basis, level)
}

deny contains common.reason("consent_refused", sprintf("the data subject refused consent for %s", [input.purpose])) if {
	consent_basis
	input.consent.given == false
	common.purpose_within(input.purpose, input.consent.purpose)
}

consent_known if {
	input.consent.given == true
	common.purpose_within(input.purpose, input.consent.purpose)
}

obligation contains {"kind": "drop_fields", "fields": common.sorted_list(dropped)} if count(dropped) > 0

# METADATA
# title: Each subject's consent is checked per record, unless the caller already established it
obligation contains {
	"kind": "require_consent",
	"purpose": input.purpose,
	"subject_field": common.dataset.subject_property,
} if {
	consent_basis
	not consent_known
}

notes contains common.reason("entitled", sprintf("department %s uses %s for %s", [input.actor.department, input.dataset, input.purpose]))

notes contains common.reason("fields_limited", concat("", ["not in the entitlement: ", concat(", ", common.sorted_list(dropped))])) if {
	count(dropped) > 0
}
