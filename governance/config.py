"""One Settings object for the whole layer, read from ``CITYGOV_`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration. Every field maps to ``CITYGOV_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CITYGOV_", extra="ignore")

    data_dir: Path = Field(default=Path("./citygov-data"), description="Where embedded state lives.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default a SQLite file under data_dir."
    )
    mqtt_url: str = Field(default="mqtt://127.0.0.1:1883", description="Broker for `citygov listen`.")
    max_payload_bytes: int = Field(
        default=256 * 1024, ge=64, description="Messages larger than this are quarantined, not parsed."
    )
    batch_size: int = Field(default=5000, ge=1, description="Records per pipeline batch for file ingest.")
    quality_checks: bool = Field(default=True, description="Run the Great Expectations suites per batch.")
    dev_mode: bool = Field(default=True, description="Development defaults; production turns this off.")
    log_level: str = Field(default="INFO")

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``<data_dir>/citygov.db`` (SQLite)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'citygov.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings`` instead)."""
    return Settings()
