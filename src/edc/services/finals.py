"""The final ranking: the top entries of the provisional leaderboard, re-measured side by side.

A provisional place can be luck: one fast run, a quiet moment on the machine. A final takes the
top ``top_k`` entries of the provisional leaderboard and measures each again ``rounds`` times on
one worker, interleaved (round 1 of every entry, then round 2, ...), so that whatever drifts on
that machine over the hour hits every entry alike. Each entry's score is then the median of its
re-measurements, with the interval and the tie rule of the provisional leaderboard
(:func:`edc.services.leaderboard.pool_of`, :func:`edc.services.leaderboard.ranked`).

- Re-measurements are :class:`~edc.models.Measurement` rows attached to the existing
  submissions, never new submissions: they count against no limit and leave the submission's own
  result as it was.
- An entry with a re-measurement that failed through the submission (wrong output, a crash, a
  timeout, ...) is out of the final, shown failed with its reason: a decoder that is not correct
  every time is not correct. A failure that was the platform's (``infrastructure``) does not
  count against the entry, which is ranked on its other rounds (or shown unmeasured without any).
- A submission disqualified since is left out.
- One final of a track runs at a time; a final whose worker went silent, or whose job was lost,
  is marked failed when the next one is asked for.
- A track's completed final is its published final leaderboard, and it never changes: once one
  is completed, :func:`finalize` refuses the track (:class:`~edc.errors.FinalPublished`).
- An entry is named as the provisional board names it: a team member's under the team's name.

``track`` is None for the default track (as finals named it before tracks). Organisers reach
:func:`finalize` through one path, :func:`edc.services.phases.open_final`, which opens the track's
final phase (its uploads close) and passes the track's provisional board.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from edc import db
from edc.clock import aware_utc
from edc.config import Settings
from edc.errors import Conflict, FinalPublished, InvalidInput, NotFound, ServiceUnavailable
from edc.models import (
    DEFAULT_TRACK,
    FINAL_MAX_ROUNDS,
    FINAL_MAX_TOP_K,
    Final,
    Measurement,
    Submission,
    Track,
    User,
    utcnow,
)
from edc.scheduler import final_queue
from edc.services import leaderboard
from edc.services.exports import csv_document
from edc.services.leaderboard import Direction, Entry, Leaderboard, Ranking, Run
from edc.status import FailureReason, FinalStatus, MeasurementStatus, ReviewState
from edc.tasks.task import task_hardware_class

MAX_TOP_K = FINAL_MAX_TOP_K
MAX_ROUNDS = FINAL_MAX_ROUNDS
LIVE = (FinalStatus.QUEUED, FinalStatus.RUNNING)
# A queued final younger than this is never taken for lost when its job is not on the queue: its
# job is enqueued just after its row is committed.
ENQUEUE_GRACE_S = 30


@dataclass(frozen=True)
class Progress:
    """How far a final is: measurements done (completed or failed) of all planned."""

    done: int
    failed: int
    total: int


@dataclass(frozen=True)
class Summary:
    """A final as the organisers' list shows it."""

    final: Final
    progress: Progress


def finalize(
    settings: Settings,
    *,
    top_k: int,
    rounds: int,
    hardware_class: str | None = None,
    requested_by: str | None = None,
    board: Leaderboard | None = None,
    track: str | None = None,
) -> Final:
    """Start a final of the top ``top_k`` entries of ``board`` (default: the provisional
    leaderboard now), each measured ``rounds`` times on one worker of ``hardware_class``
    (default: the task's, as new submissions get).

    Raises InvalidInput for numbers out of range, FinalPublished when the track's final is
    already published, Conflict when no entry is ranked or another final of the track is still
    queued or running, ServiceUnavailable when the job queue does not answer (the final is then
    recorded as failed).
    """
    check_plan(top_k=top_k, rounds=rounds)
    hardware_class = hardware_class or task_hardware_class(settings)
    with db.session_scope(settings) as session:
        # Two organisers finalizing one track at once take turns here (PostgreSQL), so the second
        # sees the first's final: a track never gets two finals to publish.
        session.scalar(
            select(Track.id).where(Track.name == (track or DEFAULT_TRACK)).with_for_update()
        )
        check_unpublished(session, track)
        if board is None:
            board = leaderboard.compute(session, leaderboard.task_ranking(settings))
        chosen = board.entries[:top_k]
        if not chosen:
            raise Conflict(
                "There is no ranked entry to re-measure: the leaderboard has no correct result yet."
            )
        _retire_dead(settings, session, track)
        final = Final(
            status=FinalStatus.QUEUED,
            track=track,
            top_k=len(chosen),
            rounds=rounds,
            metric=board.ranking.metric,
            direction=board.ranking.direction,
            hardware_class=hardware_class,
            requested_by=requested_by,
            entries=[
                {
                    "submission_id": e.submission_id,
                    "participant": e.participant,
                    "provisional_rank": e.rank,
                    "provisional_score": e.score,
                    "provisional_runs": e.runs,
                }
                for e in chosen
            ],
        )
        session.add(final)
        session.flush()
        session.add_all(
            Measurement(
                final_id=final.id, submission_id=e.submission_id, round=r, position=position
            )
            for r in range(1, rounds + 1)
            for position, e in enumerate(chosen, start=1)
        )
        final_id = final.id
    try:
        final_queue.enqueue_final(
            settings, final_id, hardware_class=hardware_class, measurements=len(chosen) * rounds
        )
    except ServiceUnavailable as exc:
        _fail(settings, final_id, f"It could not be queued, nothing was measured: {exc.message}")
        raise
    return get(settings, final_id)


def check_plan(*, top_k: int, rounds: int) -> None:
    """Refuse (InvalidInput) a final of ``top_k`` entries × ``rounds`` out of range."""
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidInput(f"The number of entries must be between 1 and {MAX_TOP_K}.")
    if not 1 <= rounds <= MAX_ROUNDS:
        raise InvalidInput(f"The number of rounds must be between 1 and {MAX_ROUNDS}.")


def check_unpublished(session: Session, track: str | None) -> None:
    """Refuse (FinalPublished) a track whose final is published: completed, it never changes."""
    done = session.scalar(
        select(Final.id)
        .where(Final.status == FinalStatus.COMPLETED, same_track(track))
        .order_by(Final.id.desc())  # the one the boards show, were there several from before
        .limit(1)
    )
    if done is not None:
        raise FinalPublished(track or DEFAULT_TRACK, done)


def _retire_dead(settings: Settings, session: Session, track: str | None) -> None:
    """Refuse while a final of ``track`` is alive; mark failed one that died unseen."""
    live = session.scalars(
        select(Final).where(Final.status.in_(LIVE), same_track(track)).order_by(Final.id)
    ).all()
    stale_before = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    # A final is committed before its job is enqueued: one this young may not be on the queue yet.
    queued_before = utcnow() - timedelta(seconds=ENQUEUE_GRACE_S)
    for final in live:
        if final.status is FinalStatus.RUNNING:
            beat = aware_utc(final.heartbeat_at or final.started_at or final.created_at)
            if beat >= stale_before:
                raise Conflict(
                    f"Final {final.id} is running on {final.worker_id or 'a worker'}; "
                    f"wait until it ends."
                )
            dead = f"Its worker ({final.worker_id or '?'}) stopped responding"
        elif aware_utc(final.created_at) >= queued_before or final_queue.final_job_is_live(
            settings, final.id
        ):
            raise Conflict(
                f"Final {final.id} is waiting for a {final.hardware_class} worker (after every "
                f"waiting submission); wait until it ends."
            )
        else:
            dead = "Its job was lost from the queue"
        final.status = FinalStatus.FAILED
        final.finished_at = utcnow()
        final.message = f"{dead}; the measurements taken are kept. A new final replaced it."
    session.flush()


def same_track(track: str | None) -> Any:
    """Finals of ``track`` (None: the default track's, which name none)."""
    return Final.track.is_(None) if track is None else Final.track == track


def _fail(settings: Settings, final_id: int, message: str) -> None:
    with db.session_scope(settings) as session:
        session.execute(
            update(Final)
            .where(Final.id == final_id)
            .values(status=FinalStatus.FAILED, finished_at=utcnow(), message=message)
            .execution_options(synchronize_session=False)
        )


def get(settings: Settings, final_id: int) -> Final:
    with db.session_scope(settings) as session:
        return existing(session, final_id)


def existing(session: Session, final_id: int) -> Final:
    final = session.get(Final, final_id)
    if final is None:
        raise NotFound(f"There is no final {final_id}.")
    return final


def summary(session: Session, final_id: int) -> Summary:
    """One final with its progress."""
    return _with_progress(session, [existing(session, final_id)])[0]


def summaries(session: Session, *, limit: int = 50) -> list[Summary]:
    """The latest finals, newest first, with their progress."""
    return _with_progress(
        session, session.scalars(select(Final).order_by(Final.id.desc()).limit(limit)).all()
    )


def _with_progress(session: Session, finals: Sequence[Final]) -> list[Summary]:
    if not finals:
        return []
    counts = session.execute(
        select(Measurement.final_id, Measurement.status, func.count())
        .where(Measurement.final_id.in_([f.id for f in finals]))
        .group_by(Measurement.final_id, Measurement.status)
    ).all()
    by_final: dict[int, dict[MeasurementStatus, int]] = {}
    for final_id, status, count in counts:
        by_final.setdefault(final_id, {})[status] = int(count)
    out = []
    for final in finals:
        c = by_final.get(final.id, {})
        done = c.get(MeasurementStatus.COMPLETED, 0) + c.get(MeasurementStatus.FAILED, 0)
        failed = c.get(MeasurementStatus.FAILED, 0)
        out.append(Summary(final, Progress(done=done, failed=failed, total=sum(c.values()))))
    return out


# --- the final leaderboard ---


@dataclass(frozen=True)
class Standing:
    """One chosen entry in a final: its provisional place and what the re-measurements said."""

    participant: str
    submission_id: int
    provisional_rank: int
    provisional_score: float
    provisional_runs: int
    measured: int  # completed re-measurements
    failed: int  # failed re-measurements
    # Ranked: its place in the final (rank, pooled score, interval, tie). None: out of it.
    entry: Entry | None
    # Why it is out, for an entry that is: "failed", "not measured", "pending", "disqualified".
    out: str | None = None
    # The first failure through the submission (or, without one, the platform's last).
    failure_reason: FailureReason | None = None
    failure_message: str | None = None  # for organisers: can name the hidden stage


@dataclass(frozen=True)
class FinalBoard:
    final: Final
    ranking: Ranking
    ranked: list[Standing]  # in final order
    unranked: list[Standing]  # in provisional order
    generated_at: datetime


def board(session: Session, final: Final) -> FinalBoard:
    """The final leaderboard of ``final`` (partial while it runs)."""
    direction: Direction = "higher" if final.direction == "higher" else "lower"
    track = final.track or DEFAULT_TRACK
    ranking = Ranking(metric=final.metric, direction=direction, track=track)
    rows = session.execute(
        select(Measurement, Submission.disqualified, Submission.review, Submission.created_at)
        .join(Submission, Submission.id == Measurement.submission_id)
        .where(Measurement.final_id == final.id)
        .order_by(Measurement.position, Measurement.round)
    ).all()
    by_submission: dict[int, list[Measurement]] = {}
    facts: dict[int, tuple[bool, ReviewState | None, datetime]] = {}
    for measurement, disqualified, review, created_at in rows:
        by_submission.setdefault(measurement.submission_id, []).append(measurement)
        facts[measurement.submission_id] = (bool(disqualified), review, aware_utc(created_at))
    names = _current_names(session, list(facts))
    ranked_entries: list[Entry] = []
    standings: dict[int, Standing] = {}
    for chosen in final.entries:
        sid = int(chosen["submission_id"])
        measurements = by_submission.get(sid, [])
        disqualified, review, created_at = facts.get(sid, (True, None, final.created_at))
        standing = _standing(
            chosen,
            names.get(sid, str(chosen["participant"])),
            measurements,
            disqualified=disqualified,
            flagged=review == ReviewState.FLAGGED,
            submitted_at=created_at,
        )
        standings[sid] = standing
        if standing.entry is not None:
            ranked_entries.append(standing.entry)
    ranked = leaderboard.ranked(ranking, ranked_entries)
    ranked_standings = [replace(standings[e.submission_id], entry=e) for e in ranked]
    unranked = [s for s in standings.values() if s.entry is None]
    return FinalBoard(
        final=final,
        ranking=ranking,
        ranked=ranked_standings,
        unranked=unranked,
        generated_at=utcnow(),
    )


def _current_names(session: Session, submission_ids: Sequence[int]) -> dict[int, str]:
    """Each submission's entry name now, as the provisional board names it: a team member's
    under the team's name, anyone else's under their own."""
    if not submission_ids:
        return {}
    rows = session.execute(
        select(Submission.id, Submission.user_id, User.name)
        .join(User, User.id == Submission.user_id)
        .where(Submission.id.in_(list(submission_ids)))
    ).all()
    teams = leaderboard.team_names(session) if rows else {}
    return {row.id: teams.get(row.user_id) or row.name for row in rows}


def _standing(
    chosen: dict[str, Any],
    participant: str,
    measurements: Sequence[Measurement],
    *,
    disqualified: bool,
    flagged: bool,
    submitted_at: datetime,
) -> Standing:
    completed = [m for m in measurements if m.status is MeasurementStatus.COMPLETED]
    failed = [m for m in measurements if m.status is MeasurementStatus.FAILED]
    pending = [m for m in measurements if m.status is MeasurementStatus.PENDING]
    theirs = [m for m in failed if m.failure_reason is not FailureReason.INFRASTRUCTURE]
    shown_failure = theirs[0] if theirs else (failed[-1] if failed else None)
    base = Standing(
        participant=participant,
        submission_id=int(chosen["submission_id"]),
        provisional_rank=int(chosen["provisional_rank"]),
        provisional_score=float(chosen["provisional_score"]),
        provisional_runs=int(chosen.get("provisional_runs", 1)),
        measured=len(completed),
        failed=len(failed),
        entry=None,
        failure_reason=shown_failure.failure_reason if shown_failure else None,
        failure_message=shown_failure.failure_message if shown_failure else None,
    )
    if disqualified:
        return replace(base, out="disqualified")
    if theirs:
        return replace(base, out="failed")
    if not completed:
        return replace(base, out="pending" if pending else "not measured")
    entry = _pooled_entry(completed, base, flagged=flagged, submitted_at=submitted_at)
    return replace(base, entry=entry)


def _pooled_entry(
    completed: Sequence[Measurement], standing: Standing, *, flagged: bool, submitted_at: datetime
) -> Entry:
    runs = [_run(m) for m in completed]
    pooled = leaderboard.pool_of(runs)
    interval = pooled.interval
    if interval is None and runs[0].low is not None and runs[0].high is not None:
        interval = (runs[0].low, runs[0].high)  # one run: its own interval
    return Entry(
        rank=None,
        participant=standing.participant,
        submission_id=standing.submission_id,
        score=pooled.median,
        score_ci=interval,
        tied_with_above=False,
        tpot_p50_ms=_median_figure(completed, "latency", "tpot_ms", "p50"),
        ttft_p50_ms=_median_figure(completed, "latency", "ttft_ms", "p50"),
        tokens_per_s=_median_figure(completed, "throughput", "output_tokens_per_s"),
        submitted_at=submitted_at,
        is_baseline=False,
        flagged=flagged or any(_implausible(m) for m in completed),
        runs=pooled.runs,
    )


def _run(m: Measurement) -> Run:
    assert m.score is not None
    low, high = _figure(m.metrics, "score_ci", 0), _figure(m.metrics, "score_ci", 1)
    if low is not None and high is not None and low > high:
        low, high = high, low
    return Run(score=float(m.score), low=low, high=high)


def _figure(metrics: Any, *path: str | int) -> float | None:
    value = metrics
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or len(value) <= part:
                return None
        elif not isinstance(value, dict):
            return None
        value = value[part] if isinstance(part, int) else value.get(part)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _median_figure(measurements: Sequence[Measurement], *path: str) -> float | None:
    values = [v for m in measurements if (v := _figure(m.metrics, *path)) is not None]
    return statistics.median(values) if values else None


def _implausible(m: Measurement) -> bool:
    plausibility = (m.metrics or {}).get("plausibility")
    return isinstance(plausibility, dict) and plausibility.get("implausible") is True


def latest_board(session: Session, *, track: str | None = None) -> FinalBoard | None:
    """The board of the latest completed final of ``track``: the published final ranking."""
    final = session.scalars(
        select(Final)
        .where(Final.status == FinalStatus.COMPLETED, same_track(track))
        .order_by(Final.finished_at.desc(), Final.id.desc())
        .limit(1)
    ).first()
    return board(session, final) if final is not None else None


CSV_COLUMNS = (
    "final_id",
    "rank",
    "participant",
    "submission_id",
    "score",
    "score_ci_low",
    "score_ci_high",
    "statistically_tied_with_above",
    "runs",
    "provisional_rank",
    "provisional_score",
    "provisional_runs",
    "out",
    "failure_reason",
    "failure_message",
    "tpot_p50_ms",
    "ttft_p50_ms",
    "output_tokens_per_s",
    "flagged_for_review",
)


def csv_text(final_board: FinalBoard) -> str:
    """The final leaderboard as CSV: ranked entries in final order, then those out of it."""
    standings = [*final_board.ranked, *final_board.unranked]
    return csv_document(CSV_COLUMNS, (_csv_row(final_board.final.id, s) for s in standings))


def _csv_row(final_id: int, s: Standing) -> Sequence[Any]:
    e = s.entry
    low, high = e.score_ci if e is not None and e.score_ci else ("", "")
    return (
        final_id,
        e.rank if e is not None else "",
        s.participant,
        s.submission_id,
        repr(e.score) if e is not None else "",
        low,
        high,
        "yes" if e is not None and e.tied_with_above else "",
        s.measured,
        s.provisional_rank,
        repr(s.provisional_score),
        s.provisional_runs,
        s.out or "",
        s.failure_reason.value if s.failure_reason else "",
        s.failure_message or "",
        _blank(e.tpot_p50_ms if e else None),
        _blank(e.ttft_p50_ms if e else None),
        _blank(e.tokens_per_s if e else None),
        "yes" if e is not None and e.flagged else "",
    )


def _blank(value: float | None) -> Any:
    return "" if value is None else value
