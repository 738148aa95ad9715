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
    literal_column,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement

from edc.status import FailureReason, FinalStatus, MeasurementStatus, ReviewState, SubmissionStatus

# The track of a fresh platform, and of every row from before tracks existed.
DEFAULT_TRACK = "default"
# A track's phases.
DEVELOPMENT = "development"
FINAL_PHASE = "final"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


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
    # The team it competes in, if any: members share limits and one leaderboard row per track.
    team_id: Mapped[int | None] = mapped_column(
        ForeignKey("teams.id", ondelete="SET NULL", name="fk_users_team_id"), index=True
    )

    def __repr__(self) -> str:
        return f"<User {self.id} {self.name}{' admin' if self.is_admin else ''}>"


class Team(Base):
    """Participants who compete as one (see edc.services.teams)."""

    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    invite_code: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


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


class KnownLoginAddress(Base):
    """An address a user has logged in from (a hash of user name and address): log-ins from it
    are exempt from the throttle on an attacked name, so the owner is not locked out."""

    __tablename__ = "known_login_addresses"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    last_login_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


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
    # The track it competes in (tracks.name): its task judges it, its board ranks it.
    track: Mapped[str] = mapped_column(
        String(64), default=DEFAULT_TRACK, server_default=DEFAULT_TRACK
    )
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


class Track(Base):
    """A task registered with the platform, with its own submissions and leaderboard.

    ``task_dir`` None: the platform's configured task (``EDC_TASK_DIR``, else the bundled one),
    which a fresh platform's default track judges by.
    """

    __tablename__ = "tracks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    task_dir: Mapped[str | None] = mapped_column(String(1024))
    # "development" (uploads open, the provisional board) or "final" (uploads closed, its top
    # entries re-measured for the final board).
    phase: Mapped[str] = mapped_column(String(16), default=DEVELOPMENT, server_default=DEVELOPMENT)
    # The track's own upload window; where unset, the platform's (EDC_COMPETITION_START/END).
    opens_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closes_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Its own limits per participant; where unset, the platform's (EDC_SUBMISSIONS_PER_DAY,
    # EDC_MAX_QUEUED_PER_USER).
    submissions_per_day: Mapped[int | None] = mapped_column(Integer)
    max_queued_per_user: Mapped[int | None] = mapped_column(Integer)
    # Told of a new rank 1 and of a published final (edc.services.notifications); None: nobody.
    # A secret (the URL is the key to a Slack or Discord channel): never shown publicly.
    webhook_url: Mapped[str | None] = mapped_column(String(1024))
    # The submission last announced as rank 1, so each leader is announced once.
    announced_leader: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


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


class ChangeCounter(Base):
    """A number that moves whenever what it counts changes, so readers can cache what they
    derive from it (the leaderboard, the metrics' histograms) and recompute only when it moved.

    Database triggers move it (migration 0006), so no write path can forget to. A missing row is
    created at a random value, never at one a reader may have cached before the table was
    emptied.
    """

    __tablename__ = "change_counters"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


# The most entries and rounds one final may take (a final runs on one worker).
FINAL_MAX_TOP_K = 100
FINAL_MAX_ROUNDS = 20


class Final(Base):
    """A final ranking: the top entries of the provisional leaderboard, re-measured side by side.

    Its plan is its measurements (``rounds`` × ``top_k`` rows made at the start, run in round
    order); ``entries`` keeps what the provisional leaderboard showed of them when it began.
    """

    __tablename__ = "finals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[FinalStatus] = mapped_column(
        _enum_column(FinalStatus, "final_status"), default=FinalStatus.QUEUED
    )
    # None: the competition's one leaderboard. A per-track final names its track here.
    track: Mapped[str | None] = mapped_column(String(64))
    top_k: Mapped[int] = mapped_column(Integer)
    rounds: Mapped[int] = mapped_column(Integer)
    # The ranking rule it was measured and ranked under (the task's, when it began).
    metric: Mapped[str] = mapped_column(String(100))
    direction: Mapped[str] = mapped_column(String(8))
    # Every measurement runs on one worker of this class (the one that claimed the final).
    hardware_class: Mapped[str] = mapped_column(String(32))
    worker_id: Mapped[str | None] = mapped_column(String(128))
    requested_by: Mapped[str | None] = mapped_column(String(40))
    # The provisional entries chosen, best first: submission_id, participant, provisional_rank,
    # provisional_score, provisional_runs.
    entries: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Refreshed by its worker while it runs; a stale one means the worker died.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A sentence for organisers: how it ended, or why it failed.
    message: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"<Final {self.id} {self.status}>"


class Measurement(Base):
    """One re-measurement of a submission in a final. Not a submission: it counts against no
    limit, and the submission's own result is left as it was."""

    __tablename__ = "measurements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    final_id: Mapped[int] = mapped_column(ForeignKey("finals.id", ondelete="CASCADE"))
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    round: Mapped[int] = mapped_column(Integer)
    # The entry's place on the provisional leaderboard when the final began (1 = best).
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[MeasurementStatus] = mapped_column(
        _enum_column(MeasurementStatus, "measurement_status"), default=MeasurementStatus.PENDING
    )
    # metrics.score of the run, under the final's metric; None unless completed.
    score: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    failure_reason: Mapped[FailureReason | None] = mapped_column(
        _enum_column(FailureReason, "failure_reason")
    )
    failure_message: Mapped[str | None] = mapped_column(Text)
    # The run's output on hidden prompts: organisers only.
    logs: Mapped[str | None] = mapped_column(Text)
    # For organisers only, like submissions.audit: what replays this run.
    audit: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("final_id", "submission_id", "round", name="uq_measurements_run"),
        # The worker's plan: round 1 of every entry, then round 2, ...
        Index("ix_measurements_plan", "final_id", "round", "position"),
    )


def running_attempt(submission_id: int, attempt: int) -> ColumnElement[bool]:
    """The row, while this attempt is still the one being evaluated: the condition of every
    write a worker (or the reconciler acting for a dead one) makes, so a superseded attempt
    changes nothing."""
    return and_(
        Submission.id == submission_id,
        Submission.status == SubmissionStatus.PROCESSING,
        Submission.attempt == attempt,
    )


def ranked_result(rows: Any = Submission) -> ColumnElement[bool]:
    """A result that may be ranked on the leaderboard: completed, correct, scored, not disqualified.

    ``rows`` is ``Submission`` or an alias of it. ``status`` is compared with an inline literal,
    not a bound parameter: PostgreSQL uses a partial index (``ix_submissions_pool``) only when it
    can prove the query's condition implies the index's, which it cannot do for a parameter of a
    prepared statement's generic plan.
    """
    return and_(
        rows.status == literal_column(f"'{SubmissionStatus.COMPLETED.value}'"),
        rows.correct.is_(True),
        rows.score.is_not(None),
        rows.disqualified.is_(False),
    )


def pooled_result(rows: Any = Submission) -> ColumnElement[bool]:
    """A ranked result that pools into its participant's entry (baselines are listed apart)."""
    return and_(ranked_result(rows), rows.is_baseline.is_(False))


# Baselines and results off the board aside, the leaderboard pools one participant's runs of one
# archive: whether a run has company, and (user, sha256) groups in score order, from the index
# alone.
Index(
    "ix_submissions_pool",
    Submission.track,
    Submission.user_id,
    Submission.sha256,
    Submission.score,
    postgresql_include=["id", "review", "score_ci_low", "score_ci_high"],
    postgresql_where=pooled_result(),
    sqlite_where=pooled_result(),
)
# Each participant's best ranked run, and whether another has its score, from the index alone.
Index(
    "ix_submissions_best",
    Submission.track,
    Submission.user_id,
    Submission.score,
    Submission.created_at,
    Submission.id,
    postgresql_include=["sha256", "review"],
    postgresql_where=pooled_result(),
    sqlite_where=pooled_result(),
)
# One participant's scores in order.
Index("ix_submissions_user_score", Submission.user_id, Submission.score, Submission.created_at)
# Baselines are few among many: found without a scan.
Index("ix_submissions_baseline", Submission.is_baseline, Submission.track, Submission.score)
# Limits count one participant's recent submissions.
Index("ix_submissions_user_created", Submission.user_id, Submission.created_at)
# Queue positions count the queued rows ahead.
Index("ix_submissions_status_queued", Submission.status, Submission.queued_at, Submission.id)
# The round-robin pointer: whose submission a worker of a class claimed last.
Index("ix_submissions_class_started", Submission.hardware_class, Submission.started_at)
