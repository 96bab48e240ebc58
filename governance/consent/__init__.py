"""Consent records, their append-only history, signed receipts, and the lookup policies use."""
