"""The tamper-evident audit log: append-only entries, an RFC 6962 Merkle tree, signed tree heads, proofs.

See ``docs/audit-format.md`` for the byte-level format an auditor can verify independently.
"""
