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
    batch_size: int = Field(
        default=50_000, ge=1,
        description="Entities per pipeline batch for file ingest (one transaction, one quality run per type).",
    )
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
        default=300, ge=0, description="How long a decision is reused for one scope or input and revision (0: never)."
    )
    quarantine_retention_days: int = Field(
        default=30, ge=1, description="Days a sealed quarantined payload of a personal-data feed is kept."
    )
    protection: bool = Field(
        default=True, description="Carry out the storage policy (pseudonyms, encryption, retention) at write."
    )
    retention_batch_size: int = Field(
        default=5000, ge=1, le=100_000,
        description="Rows the retention sweep and an erasure delete per transaction.",
    )
    retention_interval_seconds: int = Field(
        default=3600, ge=60, description="How often a long-running service runs the retention sweep."
    )
    consent_file: Path | None = Field(
        default=None, description="Interim consent registry (JSON) until the consent module lands."
    )
    query_max_page_size: int = Field(
        default=5000, ge=1, le=10_000, description="Largest page_size a data query may ask for (413 above)."
    )
    query_max_scan_rows: int = Field(
        default=200_000, ge=1,
        description="Most stored rows one whole-set query (aggregate, k-anonymity, DP) may read (413 above).",
    )
    query_max_result_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="A shaped query result larger than this is refused (413)."
    )
    dp_default_epsilon_budget: float = Field(
        default=1.0, gt=0, description="Total privacy budget (epsilon) of an agreement that does not set its own."
    )
    dp_max_contributions: int = Field(
        default=10, ge=1, description="Records per data subject a DP aggregate counts (the rest are not used)."
    )
    api_audience: str = Field(
        default="citygov", min_length=1, description="The 'aud' every signed API request must name."
    )
    api_public_url: str | None = Field(
        default=None,
        description="The API's public base URL (https://data.city.example): signed 'htu' claims are checked "
        "against it. Unset, the scheme and Host of each request are used (development, tests).",
    )
    api_max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Request bodies over this are refused (413) before parsing."
    )
    api_clock_skew_seconds: int = Field(
        default=30, ge=0, le=300, description="Clock difference allowed on iat, nbf and exp of signed requests."
    )
    api_token_max_lifetime_seconds: int = Field(
        default=300, ge=1, le=3600, description="Longest exp - iat a signed request may have."
    )
    api_replay_purge_seconds: int = Field(
        default=60, ge=1, description="How often the server deletes expired request ids (jti) from the replay table."
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
