"""Database tables (SQLAlchemy 2.x). The database is the truth; Redis only ever carries ids."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Enum, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class SubmissionStatus(enum.StrEnum):
    """Where a submission is in its life.

    ``queued`` → ``processing`` → ``completed`` | ``failed``; ``cancelled`` by a user or admin.
    Only the worker that claimed a ``queued`` row may move it on; a duplicate delivery finds the
    row no longer ``queued`` and does nothing.
    """

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (self.COMPLETED, self.FAILED, self.CANCELLED)


class FailureReason(enum.StrEnum):
    """Why a submission failed. ``infrastructure`` is the platform's fault and is retried."""

    INVALID_ARCHIVE = "invalid_archive"
    LOAD_TIMEOUT = "load_timeout"
    RUN_TIMEOUT = "run_timeout"
    WRONG_OUTPUT = "wrong_output"
    CRASHED = "crashed"
    MEMORY_LIMIT = "memory_limit"
    PROTOCOL_ERROR = "protocol_error"
    INFRASTRUCTURE = "infrastructure"


def _enum_column(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as plain strings (no native PostgreSQL enum) so adding a value needs no type migration.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        length=32,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Submission(Base):
    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[SubmissionStatus] = mapped_column(
        _enum_column(SubmissionStatus, "submission_status"),
        default=SubmissionStatus.QUEUED,
        index=True,
    )
    # Relative to the data directory, so a moved data dir keeps working.
    file_path: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    original_filename: Mapped[str] = mapped_column(String(255))

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    result_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    failure_reason: Mapped[FailureReason | None] = mapped_column(
        _enum_column(FailureReason, "failure_reason")
    )
    failure_message: Mapped[str | None] = mapped_column(Text)

    # Bumped each time the submission is (re)queued; the RQ job id is derived from it.
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    # Refreshed by the worker while it evaluates; a stale one means the worker died.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Output of the run on hidden prompts: for admins only, since it can echo hidden prompts.
    logs: Mapped[str | None] = mapped_column(Text)
    # Output of the quick check on public prompts: the participant may read it.
    public_logs: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"<Submission {self.id} {self.status}>"
