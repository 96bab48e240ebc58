# METADATA
# title: Storage
# description: >-
#   How long each dataset is kept (per dataset and form, else per classification) and which fields
#   are pseudonymized or encrypted at rest.
package citygov.storage

import rego.v1

import data.citygov.common

# METADATA
# title: The storage decision
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

# METADATA
# title: Raw records or aggregates (input.context.form, default raw)
form := object.get(input.context, "form", "raw")

level := common.level_of(input.fields)

# METADATA
# title: Retention in days
# description: data.city.retention.datasets[dataset][form] when listed, else the classification default.
retention_days := days if {
	days := data.city.retention.datasets[input.dataset][form]
} else := data.city.retention.classification[level]

subject_field := common.dataset.subject_property

# METADATA
# title: Personal fields encrypted at rest
# description: >-
#   Every personal or special-category field but the identity and the (pseudonymized) subject, under the
#   subject's own key. A dataset without a data subject (a device's location) has no person to key them by:
#   its personal fields are listed in the notes (personal_unkeyed) for the privacy officer instead.
encrypted contains name if {
	has_subject
	some name, rank in common.field_ranks
	rank >= common.rank.personal
	not name in common.identity_fields
	name != subject_field
}

deny contains common.reason("not_a_service", sprintf("storage is done by citygov services, not by a %s", [input.actor.kind])) if {
	input.actor.kind != "service"
}

deny contains common.reason("unknown_dataset", sprintf("dataset %s is not in the catalog", [input.dataset])) if {
	not common.dataset
}

deny contains common.reason("unknown_form", sprintf("form %s is neither raw nor aggregate", [form])) if {
	not form in {"raw", "aggregate"}
}

obligation contains {"kind": "retention", "days": retention_days}

# METADATA
# title: The data subject is pseudonymized in stored raw records
obligation contains {"kind": "pseudonymize", "fields": [subject_field], "recipient": "store"} if {
	subject_field in input.fields
	form == "raw"
}

obligation contains {"kind": "encrypt_at_rest", "fields": common.sorted_list(encrypted)} if count(encrypted) > 0

has_subject if subject_field != null

unkeyed contains name if {
	not has_subject
	some name, rank in common.field_ranks
	rank >= common.rank.personal
	not name in common.identity_fields
}

notes contains common.reason("personal_unkeyed", concat("", ["personal fields of ", input.dataset, " have no data subject to be encrypted for: ", concat(", ", common.sorted_list(unkeyed))])) if count(unkeyed) > 0

notes contains common.reason("retention", concat("", [form, " records of ", input.dataset, " (", level, " data) kept ", format_int(retention_days, 10), " days"]))
