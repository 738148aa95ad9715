"""Database tables (SQLAlchemy 2.x). The database is the truth; Redis only ever carries ids."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    false,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement


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


class ReviewState(enum.StrEnum):
    """An organiser's look at a result the platform doubts (e.g. faster than physics allows).

    ``flagged`` results stay on the leaderboard, marked, until an organiser ``cleared`` them or
    disqualified the submission.
    """

    FLAGGED = "flagged"
    CLEARED = "cleared"


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


class MetricNumber(ColumnElement[float]):
    """``result_metrics`` at ``path`` when it is a JSON number, else NULL: a generated column.

    The leaderboard filters, sorts and shows a few metrics; as generated columns they can be
    indexed and read without parsing the JSON of every row, alike on SQLite and PostgreSQL,
    while the worker keeps writing only the JSON. Path parts are keys, or list indexes (ints).
    """

    inherit_cache = True

    def __init__(self, *path: str | int) -> None:
        self.path = path


class MetricIsTrue(ColumnElement[bool]):
    """``result_metrics[key]`` is JSON ``true`` (NULL when there are no metrics)."""

    inherit_cache = True

    def __init__(self, key: str) -> None:
        self.key = key


def _pg_path(path: tuple[str | int, ...]) -> str:
    return "'{" + ",".join(str(part) for part in path) + "}'"


def _sqlite_path(path: tuple[str | int, ...]) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return f"'{text}'"


@compiles(MetricNumber, "postgresql")
def _metric_number_pg(element: MetricNumber, _compiler: SQLCompiler, **_kw: Any) -> str:
    p = _pg_path(element.path)
    return (
        f"CASE WHEN json_typeof(result_metrics #> {p}) = 'number' "
        f"THEN (result_metrics #>> {p})::double precision END"
    )


@compiles(MetricNumber, "sqlite")
def _metric_number_sqlite(element: MetricNumber, _compiler: SQLCompiler, **_kw: Any) -> str:
    p = _sqlite_path(element.path)
    return (
        f"CASE WHEN json_type(result_metrics, {p}) IN ('real', 'integer') "
        f"THEN json_extract(result_metrics, {p}) END"
    )


@compiles(MetricIsTrue, "postgresql")
def _metric_true_pg(element: MetricIsTrue, _compiler: SQLCompiler, **_kw: Any) -> str:
    k = element.key
    return (
        f"(json_typeof(result_metrics -> '{k}') = 'boolean' "
        f"AND (result_metrics ->> '{k}') = 'true')"
    )


@compiles(MetricIsTrue, "sqlite")
def _metric_true_sqlite(element: MetricIsTrue, _compiler: SQLCompiler, **_kw: Any) -> str:
    return f"(json_type(result_metrics, '$.{element.key}') = 'true')"


# Generated columns of the submissions table: (column, path into result_metrics).
METRIC_COLUMNS: tuple[tuple[str, tuple[str | int, ...]], ...] = (
    ("score", ("score",)),
    ("score_ci_low", ("score_ci", 0)),
    ("score_ci_high", ("score_ci", 1)),
    ("tpot_p50_ms", ("latency", "tpot_ms", "p50")),
    ("ttft_p50_ms", ("latency", "ttft_ms", "p50")),
    ("tokens_per_s", ("throughput", "output_tokens_per_s")),
)


class User(Base):
    """A participant (or an admin). Names are lower-case and unique."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    # argon2id; None for accounts that only use API tokens (made with `edc user create`).
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Written before the limits are counted, so one participant's uploads are checked in turn.
    last_submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def __repr__(self) -> str:
        return f"<User {self.id} {self.name}{' admin' if self.is_admin else ''}>"


class ApiToken(Base):
    """A bearer token for the CLI and API: only its SHA-256 is kept; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebSession(Base):
    """A browser log-in; the cookie carries the random id (signed), the table its SHA-256."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LoginFailure(Base):
    """One failed log-in, keyed by a hash of (user name, client address), for rate limiting."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


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

    # None for rows from before accounts existed.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # When it last joined the queue (upload or rerun): queue positions follow it.
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The task's hardware class when it was submitted: only workers of that class time it.
    hardware_class: Mapped[str] = mapped_column(String(32), default="cpu", server_default="cpu")
    # Shown apart on the leaderboard (an organiser's reference decoder).
    is_baseline: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    disqualified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    disqualified_reason: Mapped[str | None] = mapped_column(Text)
    # Organisers' review of a result the platform doubts (ReviewState); None when none is needed.
    review: Mapped[ReviewState | None] = mapped_column(_enum_column(ReviewState, "review_state"))
    # For organisers only: what exactly replays the hidden evaluation (its secret seed, the drawn
    # prompts' ids). Never shown to the participant.
    audit: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Generated by the database from result_metrics (see MetricNumber); never written.
    score: Mapped[float | None] = mapped_column(
        Float, Computed(MetricNumber("score"), persisted=True)
    )
    score_ci_low: Mapped[float | None] = mapped_column(
        Float, Computed(MetricNumber("score_ci", 0), persisted=True)
    )
    score_ci_high: Mapped[float | None] = mapped_column(
        Float, Computed(MetricNumber("score_ci", 1), persisted=True)
    )
    tpot_p50_ms: Mapped[float | None] = mapped_column(
        Float, Computed(MetricNumber("latency", "tpot_ms", "p50"), persisted=True)
    )
    ttft_p50_ms: Mapped[float | None] = mapped_column(
        Float, Computed(MetricNumber("latency", "ttft_ms", "p50"), persisted=True)
    )
    tokens_per_s: Mapped[float | None] = mapped_column(
        Float, Computed(MetricNumber("throughput", "output_tokens_per_s"), persisted=True)
    )
    correct: Mapped[bool | None] = mapped_column(
        Boolean, Computed(MetricIsTrue("correct"), persisted=True)
    )

    def __repr__(self) -> str:
        return f"<Submission {self.id} {self.status}>"


class HiddenPrompt(Base):
    """The hidden prompt pool of a task: every worker draws each evaluation's prompts from here.

    It lives in the database (never in the package, never per host) so that all workers use one
    pool, and nothing inside a sandbox can read or regenerate it.
    """

    __tablename__ = "hidden_prompts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(100))
    prompt_id: Mapped[str] = mapped_column(String(100))
    tokens: Mapped[list[int]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("task", "prompt_id", name="uq_hidden_prompts_task_id"),)


# The leaderboard's per-participant probe: best score first, then the earlier submission.
def running_attempt(submission_id: int, attempt: int) -> ColumnElement[bool]:
    """The row, while this attempt is still the one being evaluated: the condition of every
    write a worker (or the reconciler acting for a dead one) makes, so a superseded attempt
    changes nothing."""
    return and_(
        Submission.id == submission_id,
        Submission.status == SubmissionStatus.PROCESSING,
        Submission.attempt == attempt,
    )


Index("ix_submissions_user_score", Submission.user_id, Submission.score, Submission.created_at)
# Baselines are few among many: found without a scan.
Index("ix_submissions_baseline", Submission.is_baseline, Submission.score)
# Limits count one participant's recent submissions.
Index("ix_submissions_user_created", Submission.user_id, Submission.created_at)
# Queue positions count the queued rows ahead.
Index("ix_submissions_status_queued", Submission.status, Submission.queued_at, Submission.id)
# The round-robin pointer: whose submission a worker of a class claimed last.
Index("ix_submissions_class_started", Submission.hardware_class, Submission.started_at)
