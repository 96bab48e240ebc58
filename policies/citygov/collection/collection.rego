# METADATA
# title: Collection
# description: >-
#   Which source (adapter) may feed which dataset, which fields it may send (data minimization), and
#   the legal basis on which personal and special-category data are collected. Decided once per
#   (source, dataset, set of fields, subject present?); per-record consent is an obligation.
package citygov.collection

import rego.v1

import data.citygov.common

# METADATA
# title: The collection decision
# description: allow, reasons, obligations and flags, in the shape every stage returns.
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

# METADATA
# title: What the source has registered for this dataset
# description: From data.city.sources; a source feeds only the datasets listed under it.
entry := data.city.sources[input.actor.id].datasets[input.dataset]

max_level := object.get(entry, "max_classification", "internal")

# METADATA
# title: Fields the source may not send, dropped before storage
# description: Fields above the source's max_classification and the fields it lists under drop.
dropped contains name if {
	some name in input.fields
	not name in common.identity_fields
	common.field_ranks[name] > common.rank[max_level]
}

dropped contains name if {
	some name in input.fields
	name in object.get(entry, "drop", [])
}

kept := common.input_fields - dropped

level := common.level_of(kept)

personal if common.rank[level] >= common.rank.personal

subject_named if {
	prop := common.dataset.subject_property
	prop in kept
}

consent_basis if {
	personal
	entry.basis == "consent"
}

deny contains common.reason("not_a_source", sprintf("collection is done by sources, not by a %s", [input.actor.kind])) if {
	input.actor.kind != "source"
}

deny contains common.reason("unknown_dataset", sprintf("dataset %s is not in the catalog", [input.dataset])) if {
	not common.dataset
}

# METADATA
# title: A source feeds only the datasets it is registered for
deny contains common.reason("source_not_allowed", sprintf("source %s may not feed dataset %s", [input.actor.id, input.dataset])) if {
	common.dataset
	not entry
}

# METADATA
# title: Personal and special-category data need a sufficient legal basis
deny contains common.reason("no_legal_basis", sprintf("%s data of %s needs a legal basis and source %s declares none", [level, input.dataset, input.actor.id])) if {
	entry
	personal
	not entry.basis
}

deny contains common.reason("no_legal_basis", sprintf("legal basis %s does not cover %s data of %s", [entry.basis, level, input.dataset])) if {
	personal
	not common.basis_sufficient(entry.basis, level)
}

# METADATA
# title: Consent is checked per subject, so every record must name its subject
deny contains common.reason("no_legal_basis", sprintf("consent is the basis for %s but the records name no data subject", [input.dataset])) if {
	consent_basis
	not subject_named
}

deny contains common.reason("consent_refused", sprintf("the data subject refused consent for %s", [entry.purpose])) if {
	input.consent.given == false
	input.consent.purpose == entry.purpose
}

deny contains common.reason("purpose_mismatch", sprintf("source %s collects %s for %s, not for %s", [input.actor.id, input.dataset, entry.purpose, input.purpose])) if {
	input.purpose
	not common.purpose_within(input.purpose, entry.purpose)
}

obligation contains {"kind": "drop_fields", "fields": common.sorted_list(dropped)} if count(dropped) > 0

# METADATA
# title: Consent of each record's subject, checked by the pipeline with an index lookup
obligation contains {
	"kind": "require_consent",
	"purpose": entry.purpose,
	"subject_field": common.dataset.subject_property,
} if {
	consent_basis
	subject_named
}

notes contains common.reason("collected", sprintf("source %s feeds %s for %s", [input.actor.id, input.dataset, entry.purpose]))

notes contains common.reason("legal_basis", sprintf("%s data collected on the basis of %s", [level, entry.basis])) if personal

notes contains common.reason("minimized", concat("", ["dropped: ", concat(", ", common.sorted_list(dropped))])) if {
	count(dropped) > 0
}

flags contains "vital_interest" if {
	allow
	personal
	entry.basis == "vital-interest"
}

# METADATA
# title: Refused personal data is not kept, not even in quarantine
flags contains "discard_payload" if {
	not allow
	common.max_rank(input.fields) >= common.rank.personal
}
