# METADATA
# title: Shared helpers of the citygov policies
# description: >-
#   Classification ranks, the dataset of the input (generated from the schemas' x-classification),
#   decision time from input.context.time, and the purpose hierarchy. No decisions are made here.
package citygov.common

import rego.v1

# METADATA
# title: Classification ranks, least to most sensitive
rank := {"public": 0, "internal": 1, "personal": 2, "special-category": 3}

levels := ["public", "internal", "personal", "special-category"]

# METADATA
# title: Fields every entity keeps (its identity)
identity_fields := {"id", "type"}

# METADATA
# title: The dataset the input is about
# description: From data.city.datasets, which is generated from schemas/ when the bundle is loaded.
dataset := data.city.datasets[input.dataset]

dataset_fields := dataset.fields if {
	dataset
} else := {}

# METADATA
# title: Classification of each field of the input
# description: >-
#   A field the schema does not know counts as personal, as in governance.catalog. Computed once per
#   decision as an object: calling a function per field is slow in the embedded engine.
field_classes := {name: level |
	some name in input.fields
	level := object.get(dataset_fields, name, "personal")
}

field_ranks := {name: rank[level] | some name, level in field_classes}

field_class(name) := object.get(dataset_fields, name, "personal")

field_rank(name) := rank[field_class(name)]

# METADATA
# title: Highest classification rank among some of the input's fields (0 for none)
max_rank(fields) := max(array.concat([0], [r | some f in fields; r := field_ranks[f]]))

level_of(fields) := levels[max_rank(fields)]

input_fields := {f | some f in input.fields}

# METADATA
# title: Nanoseconds since the epoch of an RFC 3339 instant
# description: Accepts a trailing Z as well as a numeric offset.
instant_ns(s) := time.parse_rfc3339_ns(concat("", [trim_suffix(s, "Z"), "+00:00"])) if endswith(s, "Z")

instant_ns(s) := time.parse_rfc3339_ns(s) if not endswith(s, "Z")

# METADATA
# title: The decision time
# description: From input.context.time, never from a clock, so that every decision can be replayed.
now_ns := instant_ns(input.context.time)

purpose_graph := {name: parents |
	some name, purpose in data.city.purposes
	parents := [p | p := object.get(purpose, "parent", null); p != null]
}

# METADATA
# title: Whether purpose p is purpose g or falls under it
purpose_within(p, g) if g in graph.reachable(purpose_graph, {p})

known_purpose(p) if data.city.purposes[p]

# METADATA
# title: Whether a GDPR legal basis can justify data of a classification
# description: Art. 6 bases for personal data; explicit consent or vital interest for special categories.
basis_sufficient(_, level) if {
	rank[level] < rank.personal
}

basis_sufficient(basis, "personal") if basis in art6_bases

basis_sufficient(basis, "special-category") if basis in art9_bases

art6_bases := {"consent", "contract", "legal-obligation", "vital-interest", "public-task", "legitimate-interest"}

art9_bases := {"consent", "vital-interest"}

reason(code, detail) := {"code": code, "detail": detail}

sorted_list(s) := sort([x | some x in s])
