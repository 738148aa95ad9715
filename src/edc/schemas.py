"""The JSON API's shapes (Pydantic). Field names are part of the public API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edc.models import FailureReason, SubmissionStatus


class SubmissionOut(BaseModel):
    """A submission as the API shows it (the stored file path and the logs stay private)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    status: SubmissionStatus
    original_filename: str
    sha256: str
    size_bytes: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int
    failure_reason: FailureReason | None = None
    failure_message: str | None = None
    result_metrics: dict[str, Any] | None = None
    worker_id: str | None = None

    @field_validator("created_at", "started_at", "finished_at")
    @classmethod
    def _in_utc(cls, moment: datetime | None) -> datetime | None:
        # SQLite hands back naive times (stored in UTC); say so, as PostgreSQL does.
        if moment is not None and moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment


class SubmissionCreated(BaseModel):
    """The answer to an accepted upload."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    status: SubmissionStatus


class Page(BaseModel):
    """One page of a newest-first listing."""

    items: list[SubmissionOut]
    total: int = Field(description="How many submissions exist in all.")
    limit: int
    offset: int


class ErrorOut(BaseModel):
    """Every refusal: a sentence the user can act on, and a stable code for programs."""

    detail: str
    code: str
