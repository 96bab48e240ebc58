"""Storage: SQLModel tables, the engine, and repositories (the only place that writes SQL)."""
