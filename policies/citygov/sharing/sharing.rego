# METADATA
# title: Sharing
# description: >-
#   Data leaves its department only under a data-sharing agreement (recipient, datasets, purposes,
#   fields, period, obligations), and nothing personal leaves without consent or anonymization.
#   Emergency services get fall and SOS alerts under vital interest without an agreement, as a
#   flagged break-glass access.
package citygov.sharing

import rego.v1

import data.citygov.common

# METADATA
# title: The sharing decision
# entrypoint: true
decision := {
	"allow": allow,
	"reasons": reasons,
	"obligations": obligations,
	"flags": flags,
}

default allow := false

allow if count(deny) == 0

reasons := deny if count(deny) > 0 else := notes

obligations := set() if count(deny) > 0 else := obligation

agreement := data.city.agreements[input.agreement]

break_glass_requested if input.context.break_glass == true

# METADATA
# title: Break-glass access of emergency services under vital interest
# description: Needs the department's break-glass rule, a covered dataset and purpose, and a listed role.
break_glass := rule if {
	break_glass_requested
	input.actor.kind == "department"
	rule := data.city.break_glass[input.actor.department]
	input.dataset in rule.datasets
	some granted in rule.purposes
	common.purpose_within(input.purpose, granted)
	some role in input.actor.roles
	role in rule.roles
}

under_agreement if {
	not break_glass_requested
	agreement
}

recipient_is_party if {
	agreement.recipient_kind == "department"
	input.actor.kind == "department"
	input.actor.department == agreement.recipient
}

recipient_is_party if {
	agreement.recipient_kind == "external"
	input.actor.kind == "external"
	input.actor.id == agreement.recipient
}

purpose_covered if {
	some granted in agreement.purposes
	common.purpose_within(input.purpose, granted)
}

in_force if {
	common.now_ns >= common.instant_ns(agreement.valid_from)
	common.now_ns < common.instant_ns(agreement.valid_until)
}

permitted := {name | some name in agreement.fields} if under_agreement

permitted := {name | some name in break_glass.fields} if break_glass

anonymizing := {o | some o in agreement.obligations; o.kind in {"aggregate_only", "k_anonymity"}}

anonymized if count(anonymizing) > 0

outside_permission contains name if {
	some name in input.fields
	not name in permitted
}

requested_level := common.level_of(common.input_fields - outside_permission)

personal if common.rank[requested_level] >= common.rank.personal

# METADATA
# title: Direct identifiers removed from anonymized data
direct_identifiers contains name if {
	anonymized
	personal
	some name in common.input_fields - outside_permission
	name in {"id", common.dataset.subject_property}
}

dropped := outside_permission | direct_identifiers

subject_field := common.dataset.subject_property

consent_basis if agreement.basis == "consent"

deny contains common.reason("unknown_dataset", sprintf("dataset %s is not in the catalog", [input.dataset])) if {
	not common.dataset
}

deny contains common.reason("no_purpose", "sharing data must state its purpose") if not input.purpose

deny contains common.reason("unknown_purpose", sprintf("purpose %s is not in data.city.purposes", [input.purpose])) if {
	input.purpose
	not common.known_purpose(input.purpose)
}

deny contains common.reason("break_glass_refused", "break-glass is for listed roles of emergency services, for their datasets and purposes") if {
	break_glass_requested
	not break_glass
}

# METADATA
# title: Without break-glass, data leaves only under a data-sharing agreement
deny contains common.reason("no_agreement", "sharing needs a data-sharing agreement") if {
	not break_glass_requested
	not input.agreement
}

deny contains common.reason("unknown_agreement", sprintf("agreement %s is not in data.city.agreements", [input.agreement])) if {
	not break_glass_requested
	input.agreement
	not agreement
}

deny contains common.reason("recipient_not_party", sprintf("%s %s is not the recipient of agreement %s", [input.actor.kind, input.actor.id, input.agreement])) if {
	under_agreement
	not recipient_is_party
}

deny contains common.reason("dataset_not_covered", sprintf("agreement %s does not cover %s", [input.agreement, input.dataset])) if {
	under_agreement
	not input.dataset in agreement.datasets
}

deny contains common.reason("purpose_not_covered", sprintf("agreement %s does not cover purpose %s", [input.agreement, input.purpose])) if {
	under_agreement
	not purpose_covered
}

deny contains common.reason("agreement_not_in_force", sprintf("agreement %s is valid from %s until %s", [input.agreement, agreement.valid_from, agreement.valid_until])) if {
	under_agreement
	not in_force
}

deny contains common.reason("provider_not_owner", sprintf("agreement %s is signed by %s, which does not own %s", [input.agreement, agreement.provider, input.dataset])) if {
	under_agreement
	common.dataset
	not common.dataset.module in object.get(data.city.departments, [agreement.provider, "owns"], [])
}

# METADATA
# title: Nothing personal leaves without consent or anonymization
deny contains common.reason("personal_data_unprotected", sprintf("%s data leaves only with each subject's consent or anonymized (aggregate-only or k-anonymity)", [requested_level])) if {
	under_agreement
	personal
	not anonymized
	not consent_basis
}

obligation contains {"kind": "drop_fields", "fields": common.sorted_list(dropped)} if count(dropped) > 0

obligation contains o if {
	under_agreement
	some o in agreement.obligations
}

obligation contains {
	"kind": "require_consent",
	"purpose": input.purpose,
	"subject_field": subject_field,
	"recipient": agreement.recipient,
} if {
	under_agreement
	personal
	consent_basis
}

# METADATA
# title: With consent, the subject reaches each recipient under a pseudonym of its own
obligation contains {"kind": "pseudonymize", "fields": [subject_field], "recipient": agreement.recipient} if {
	under_agreement
	personal
	consent_basis
	subject_field in input.fields
	not subject_field in dropped
}

notes contains common.reason("agreement", sprintf("shared under %s with %s for %s", [input.agreement, agreement.recipient, input.purpose])) if {
	under_agreement
}

notes contains common.reason("break_glass", sprintf("break-glass access by %s for %s under %s", [input.actor.id, input.purpose, break_glass.basis])) if {
	break_glass
}

notes contains common.reason("fields_limited", concat("", ["not shared: ", concat(", ", common.sorted_list(dropped))])) if {
	count(dropped) > 0
}

flags contains "break_glass" if {
	allow
	break_glass
}

flags contains "vital_interest" if {
	allow
	break_glass.basis == "vital-interest"
}
