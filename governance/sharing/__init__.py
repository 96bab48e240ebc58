"""Sharing: data requests of departments and recipients, agreements, and the anonymization they demand."""
