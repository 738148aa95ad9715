"""The JSON API's shapes (Pydantic). Field names are part of the public API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from edc.clock import aware_utc
from edc.models import FINAL_MAX_ROUNDS, FINAL_MAX_TOP_K
from edc.status import FailureReason, FinalStatus, ReviewState, SubmissionStatus

# SQLite hands back naive times (stored in UTC); say so, as PostgreSQL does.
UtcTime = Annotated[datetime, AfterValidator(aware_utc)]

# PostgreSQL's text cannot hold NUL: refused here (422) rather than by the database (a 500).
NO_NUL_PATTERN = r"^[^\x00]*$"
Text = Annotated[str, StringConstraints(pattern=NO_NUL_PATTERN)]


class SubmissionOut(BaseModel):
    """A submission as its owner (or an admin) sees it; the stored path and the full logs of
    hidden-prompt runs stay private."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    status: SubmissionStatus
    owner: str | None = Field(default=None, description="The participant's user name.")
    track: str = Field(default="default", description="The track it competes in.")
    original_filename: str
    sha256: str
    size_bytes: int
    created_at: UtcTime
    started_at: UtcTime | None = None
    finished_at: UtcTime | None = None
    attempt: int
    queue_position: int | None = Field(
        default=None, description="1 = next to be evaluated; null unless queued."
    )
    failure_reason: FailureReason | None = None
    failure_message: str | None = None
    result_metrics: dict[str, Any] | None = None
    public_logs: str | None = Field(
        default=None, description="Output of the run on public prompts (the participant's)."
    )
    worker_id: str | None = None
    is_baseline: bool = False
    disqualified: bool = False
    disqualified_reason: str | None = None
    review: ReviewState | None = Field(
        default=None,
        description="`flagged`: the result is faster than the task's physical floor "
        "(`result_metrics.plausibility`) and waits for an organiser, who clears it or "
        "disqualifies the submission; `cleared`: an organiser accepted it.",
    )


class AdminSubmissionOut(SubmissionOut):
    """A submission as organisers see it: with the record that replays its hidden evaluation."""

    audit: dict[str, Any] | None = Field(
        default=None,
        description="The hidden evaluation's secret seed, request ids and prompt ids: "
        "organisers only.",
    )


class Figure(BaseModel):
    label: str
    value: str


class Notice(BaseModel):
    """A sentence about the result the participant should read (a review flag, a stale score)."""

    level: Literal["warning", "info"]
    text: str


class SubmissionEvent(SubmissionOut):
    """One message of ``GET /submissions/{id}/events``: the submission, its key figures and the
    notices about its result."""

    figures: list[Figure] = Field(default_factory=list)
    notices: list[Notice] = Field(default_factory=list)


class SubmissionCreated(BaseModel):
    """The answer to an accepted upload."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    status: SubmissionStatus
    track: str


class UploadLimitsOut(BaseModel):
    """What the portal's intake refuses, so a client can check an archive before uploading it."""

    max_upload_bytes: int = Field(gt=0, description="The largest upload, in bytes.")
    max_archive_entries: int = Field(gt=0, description="Most members in the zip, folders too.")
    max_unpacked_bytes: int = Field(
        gt=0, description="Most bytes of the members' uncompressed sizes together."
    )
    max_compression_ratio: float = Field(
        gt=1,
        description="Highest uncompressed-to-compressed ratio, of a member and of the whole (zip "
        "bombs).",
    )


class SubmissionLogs(BaseModel):
    id: int
    public_logs: str | None = None
    logs: str | None = Field(
        default=None, description="Full logs, including hidden-prompt runs: admins only."
    )


class Page(BaseModel):
    """One page of a newest-first listing."""

    items: list[SubmissionOut]
    total: int = Field(description="How many submissions the listing holds in all.")
    limit: int
    offset: int


class ErrorOut(BaseModel):
    """Every refusal: a sentence the user can act on, and a stable code for programs."""

    detail: str
    code: str


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    is_admin: bool
    created_at: UtcTime


class UsageOut(BaseModel):
    used_today: int = Field(description="Counted submissions in the last 24 hours.")
    per_day: int
    waiting: int = Field(description="Submissions queued or being evaluated now.")
    max_waiting: int
    next_allowed_at: UtcTime | None = Field(
        default=None, description="When the daily allowance has room again (null: now)."
    )


class CompetitionOut(BaseModel):
    start: UtcTime | None
    end: UtcTime | None
    open: bool
    message: str


class MeOut(BaseModel):
    user: UserOut
    track: str = Field(description="The track the usage and the window are of.")
    usage: UsageOut
    competition: CompetitionOut


class TokenRequest(BaseModel):
    name: Text
    password: str
    label: Text = "cli"


class TokenIssued(BaseModel):
    token: str = Field(description="Shown once; only its hash is stored.")
    user: UserOut


class LeaderboardEntryOut(BaseModel):
    rank: int | None = Field(description="null for baselines")
    participant: str
    submission_id: int
    score: float
    score_ci: tuple[float, float] | None = None
    statistically_tied: bool = Field(
        description="The score's interval overlaps the one of the entry ranked just above."
    )
    tpot_p50_ms: float | None = None
    ttft_p50_ms: float | None = None
    output_tokens_per_s: float | None = None
    submitted_at: UtcTime
    baseline: bool
    flagged: bool = Field(
        default=False,
        description="Faster than the task's physical floor: ranked, but awaiting an organiser's "
        "review.",
    )
    rescored_from: str | None = Field(
        default=None,
        description="The score was converted from a result ranked under this older metric "
        "(it has no interval).",
    )
    runs: int = Field(
        default=1,
        description="How many runs the entry pools: the participant's submissions of this same "
        "archive (sha256), or a final's re-measurements. The score is their median.",
    )


class LeaderboardOut(BaseModel):
    metric: str
    direction: Literal["lower", "higher"]
    entries: list[LeaderboardEntryOut]
    baselines: list[LeaderboardEntryOut]
    generated_at: UtcTime


class TrackOut(BaseModel):
    """A track: one task of the platform, with its own submissions and leaderboard."""

    name: str
    phase: Literal["development", "final"]
    opens_at: UtcTime | None = Field(default=None, description="Uploads open (null: always).")
    closes_at: UtcTime | None = Field(default=None, description="Uploads close (null: never).")
    task: str
    task_version: str
    description: str
    hardware_class: str
    metric: str
    direction: Literal["lower", "higher"]
    is_default: bool


# A track's limits live in 32-bit integer columns: a larger number is refused, not overflowed.
TRACK_MAX_LIMIT = 2**31 - 1
# The tracks table's task_dir column.
TRACK_MAX_DIR_CHARS = 1024


class TrackIn(BaseModel):
    """A track to register: a task directory on the portal's host, with its own upload window and
    limits where given (each one left out or null is the platform's)."""

    name: Text = Field(
        description="1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit."
    )
    task_dir: Annotated[Text, StringConstraints(max_length=TRACK_MAX_DIR_CHARS)] = Field(
        description="Its task directory (holding task.toml), as the portal's host sees it."
    )
    opens_at: datetime | None = Field(
        default=None, description="When its uploads open; a time without a zone is UTC."
    )
    closes_at: datetime | None = Field(
        default=None, description="When its uploads close; a time without a zone is UTC."
    )
    submissions_per_day: int | None = Field(
        default=None, ge=1, le=TRACK_MAX_LIMIT, description="Per participant per 24 hours."
    )
    max_queued_per_user: int | None = Field(
        default=None, ge=1, le=TRACK_MAX_LIMIT, description="Waiting at once per participant."
    )


class FinalIn(BaseModel):
    """A track's final phase to open: its uploads close, and the top entries of its provisional
    leaderboard are re-measured into its final leaderboard."""

    track: Annotated[Text, StringConstraints(max_length=64)] | None = Field(
        default=None, description="The track (left out or null: the default one)."
    )
    top_k: int = Field(
        default=10, ge=1, le=FINAL_MAX_TOP_K, description="How many entries to re-measure."
    )
    rounds: int = Field(
        default=3, ge=1, le=FINAL_MAX_ROUNDS, description="How many times to measure each."
    )


class FinalOut(BaseModel):
    """A final as organisers follow it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    status: FinalStatus
    track: str | None = Field(default=None, description="null: the competition's one board.")
    top_k: int
    rounds: int
    metric: str
    direction: Literal["lower", "higher"]
    hardware_class: str
    worker_id: str | None = None
    requested_by: str | None = None
    created_at: UtcTime
    started_at: UtcTime | None = None
    finished_at: UtcTime | None = None
    heartbeat_at: UtcTime | None = None
    message: str | None = None
    done: int = Field(default=0, description="Measurements taken (completed or failed).")
    failed: int = Field(default=0, description="Measurements that failed.")
    planned: int = Field(default=0, description="Measurements planned: top_k × rounds.")


class FinalInfoOut(BaseModel):
    """Which final a final leaderboard is."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    status: FinalStatus
    track: str | None = None
    top_k: int
    rounds: int
    hardware_class: str
    created_at: UtcTime
    finished_at: UtcTime | None = None


class FinalEntryOut(LeaderboardEntryOut):
    """A ranked entry of a final: ``score`` is the median of its re-measurements (``runs``)."""

    provisional_rank: int
    provisional_score: float
    provisional_runs: int


class FinalUnrankedOut(BaseModel):
    """An entry of a final that it does not rank, and why (``out``)."""

    participant: str
    submission_id: int
    provisional_rank: int
    provisional_score: float
    provisional_runs: int
    measured: int = Field(description="Re-measurements that completed.")
    failed: int = Field(description="Re-measurements that failed.")
    out: Literal["failed", "not measured", "pending", "disqualified"] = Field(
        description="`failed`: a re-measurement failed through the submission (it must be "
        "correct every time); `not measured`: only the platform failed; `pending`: not measured "
        "yet; `disqualified`: an organiser disqualified it since."
    )
    failure_reason: FailureReason | None = None


class FinalLeaderboardOut(BaseModel):
    """The final ranking: the provisional leaderboard's top entries, re-measured side by side."""

    final: Literal[True] = Field(default=True, description="Marks the board as the final one.")
    about: FinalInfoOut
    metric: str
    direction: Literal["lower", "higher"]
    entries: list[FinalEntryOut]
    unranked: list[FinalUnrankedOut]
    generated_at: UtcTime


class RecordOut(BaseModel):
    at: UtcTime
    score: float
    submission_id: int
    participant: str


class QueueItemOut(BaseModel):
    position: int
    id: int
    owner: str | None
    queued_at: UtcTime
    attempt: int


class QueueOut(BaseModel):
    length: int
    items: list[QueueItemOut]
    processing: list[SubmissionOut]


class WorkerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    state: str
    alive: bool
    submission_id: int | None
    attempt: int | None
    busy_since: UtcTime | None
    last_heartbeat: UtcTime | None
    started_at: UtcTime | None
    drifting: bool = Field(
        default=False, description="barred from taking jobs: its baseline timing is off the fleet's"
    )
    hardware_class: str | None = None
    gpus: list[str] = Field(default_factory=list, description="the devices the worker owns")
    host: str | None = None


class DisqualifyIn(BaseModel):
    reason: Text | None = None


class BaselineIn(BaseModel):
    # Strict: a number or a string is not a yes/no (the schema says boolean).
    model_config = ConfigDict(strict=True)

    baseline: bool = True


class TeamOut(BaseModel):
    """Your team: its members share its limits and one leaderboard row per track."""

    name: str
    invite_code: str = Field(description="Give it to whoever should join (edc team join CODE).")
    members: list[str]
    max_size: int


class TeamIn(BaseModel):
    # edc.services.accounts.NAME_PATTERN, either case (a name is kept lowercase).
    name: Annotated[Text, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,39}$")] = Field(
        description="2-40 letters, digits, '.', '-' or '_' (kept lowercase)."
    )


class TeamJoinIn(BaseModel):
    invite_code: Annotated[Text, StringConstraints(max_length=64)]
