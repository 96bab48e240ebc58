"""citygov: a data-governance and secure data-sharing layer for smart cities."""

__version__ = "0.1.0"
