"""Anonymization the sharing policies demand: Mondrian k-anonymity and differential privacy (OpenDP)."""
