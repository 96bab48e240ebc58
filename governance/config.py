"""One Settings object for the whole layer, read from ``CITYGOV_`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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
    master_key: SecretStr | None = Field(
        default=None,
        description="Key-encryption key(s): base64 of 32 bytes, or versioned 'v2:<b64>,v1:<b64>' (newest wraps).",
    )
    master_key_file: Path | None = Field(
        default=None, description="File holding the master key(s), one 'v<N>:<b64>' a line, mode 0600."
    )
    keystore_dir: Path | None = Field(
        default=None,
        description="Per-subject secrets (erasure deletes them); default <data_dir>/keys/subjects. Keep it out "
        "of database backups.",
    )
    receipt_issuer: str = Field(default="citygov", description="'iss' of signed consent receipts.")
    policy_engine: Literal["embedded", "opa"] = Field(
        default="embedded", description="Who evaluates the Rego policies: in-process (regopy) or an OPA server."
    )
    opa_url: str | None = Field(default=None, description="OPA server for policy_engine=opa, e.g. http://opa:8181.")
    policy_dir: Path | None = Field(
        default=None, description="Policies folder (Rego + data/); default the policies/ shipped with citygov."
    )
    policy_revision: str | None = Field(
        default=None, description="Pin a stored policy revision (<data_dir>/policy-bundles/) instead of policy_dir."
    )
    policy_timeout_ms: int = Field(
        default=2000, ge=1, description="A policy decision slower than this is a deny (fail closed)."
    )
    policy_cache_seconds: int = Field(
        default=300, ge=0, description="How long a collection decision is reused for the same scope and revision."
    )
    consent_file: Path | None = Field(
        default=None, description="Interim consent registry (JSON) until the consent module lands."
    )

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``<data_dir>/citygov.db`` (SQLite)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'citygov.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own ``Settings`` instead)."""
    return Settings()
