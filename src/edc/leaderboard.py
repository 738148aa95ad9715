"""The one definition of ranking, used by the leaderboard page, the API and the CSV export.

- Each participant's best eligible submission: completed, ``metrics.correct`` true, a numeric
  ``metrics.score``, not disqualified, not a baseline. Best by the task's direction (``lower`` or
  ``higher``); among equal scores the earlier submission wins.
- Participants are ranked the same way. An entry whose ``score_ci`` overlaps the interval of the
  entry above it is marked statistically tied with it: its place may be noise.
- Baselines (submissions an admin marked) are listed apart, each one, unranked.
- A result flagged for review (faster than the task's physical floor) stays ranked, marked, until
  an organiser clears it or disqualifies the submission.
- A result ranked under an older metric is re-scored or kept off (see :mod:`edc.rescore`); a
  re-scored one has no interval, so it claims no tie and none is claimed against it.

Failed, cancelled and disqualified submissions never appear. The per-participant best is found
with one correlated probe per participant on the ``(user_id, score, created_at)`` index, so the
cost grows with the number of participants, not of submissions.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, func, select, true
from sqlalchemy.orm import Session

from edc.clock import aware_utc
from edc.config import Settings
from edc.models import ReviewState, Submission, SubmissionStatus, User, utcnow

Direction = Literal["lower", "higher"]


@dataclass(frozen=True)
class Ranking:
    """How the task ranks: a metric name (under ``metrics.``) and which way is better."""

    metric: str
    direction: Direction

    def better(self, a: float, b: float) -> bool:
        return a < b if self.direction == "lower" else a > b


@functools.cache
def _task_ranking(task_dir: Path | None) -> Ranking:
    from edc.tasks.task import Task, bundled_task_dir

    task = Task.load(task_dir or bundled_task_dir())
    return Ranking(metric=task.ranking.metric, direction=task.ranking.direction)


def task_ranking(settings: Settings) -> Ranking:
    """The configured task's ranking rule (read once per process)."""
    return _task_ranking(settings.task_dir)


@dataclass(frozen=True)
class Entry:
    """One row of the leaderboard."""

    rank: int | None  # None for baselines
    participant: str
    submission_id: int
    score: float
    score_ci: tuple[float, float] | None
    # The interval overlaps the one of the entry ranked just above.
    tied_with_above: bool
    tpot_p50_ms: float | None
    ttft_p50_ms: float | None
    tokens_per_s: float | None
    submitted_at: datetime
    is_baseline: bool
    # Faster than the task's physical floor, not yet cleared by an organiser.
    flagged: bool = False
    # Converted from a result ranked under this older metric (see edc.rescore).
    rescored_from: str | None = None


@dataclass(frozen=True)
class Leaderboard:
    ranking: Ranking
    entries: list[Entry]
    baselines: list[Entry]
    generated_at: datetime


def eligible() -> ColumnElement[bool]:
    """Submissions that may appear on the leaderboard at all."""
    return and_(
        Submission.status == SubmissionStatus.COMPLETED,
        Submission.correct.is_(True),
        Submission.score.is_not(None),
        Submission.disqualified.is_(False),
    )


def _best_first(ranking: Ranking) -> tuple[Any, ...]:
    score = Submission.score.asc() if ranking.direction == "lower" else Submission.score.desc()
    return (score, Submission.created_at.asc(), Submission.id.asc())


def _columns() -> list[Any]:
    # Generated columns, so no JSON is parsed to rank (see edc.models.MetricNumber); the one JSON
    # key read is only for the rows shown, one per participant.
    return [
        User.name.label("participant"),
        Submission.id,
        Submission.score,
        Submission.score_ci_low,
        Submission.score_ci_high,
        Submission.tpot_p50_ms,
        Submission.ttft_p50_ms,
        Submission.tokens_per_s,
        Submission.created_at,
        Submission.is_baseline,
        Submission.review,
        Submission.result_metrics["rescored_from"].as_string().label("rescored_from"),
    ]


def _best_per_participant(ranking: Ranking) -> Select[Any]:
    best_id = (
        select(Submission.id)
        .where(Submission.user_id == User.id, eligible(), Submission.is_baseline.is_(False))
        .order_by(*_best_first(ranking))
        .limit(1)
        .correlate(User)
        .scalar_subquery()
    )
    return select(*_columns()).select_from(User).join(Submission, Submission.id == best_id)


def _baselines(ranking: Ranking) -> Select[Any]:
    return (
        select(*_columns())
        .select_from(Submission)
        .join(User, User.id == Submission.user_id, isouter=True)
        # "= true" (not "IS true") so PostgreSQL can use ix_submissions_baseline.
        .where(eligible(), Submission.is_baseline == true())
    )


def compute(session: Session, ranking: Ranking) -> Leaderboard:
    ranked = _sorted(
        ranking, [_entry(row, rank=None) for row in session.execute(_best_per_participant(ranking))]
    )
    entries: list[Entry] = []
    for index, entry in enumerate(ranked):
        above = entries[-1] if entries else None
        tied = above is not None and _overlap(above.score_ci, entry.score_ci)
        entries.append(replace(entry, rank=index + 1, tied_with_above=tied))
    baselines = _sorted(
        ranking, [_entry(row, rank=None) for row in session.execute(_baselines(ranking))]
    )
    return Leaderboard(ranking=ranking, entries=entries, baselines=baselines, generated_at=utcnow())


def _sorted(ranking: Ranking, entries: list[Entry]) -> list[Entry]:
    sign = 1.0 if ranking.direction == "lower" else -1.0
    return sorted(entries, key=lambda e: (sign * e.score, e.submitted_at, e.submission_id))


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _interval(low: Any, high: Any) -> tuple[float, float] | None:
    a, b = _number(low), _number(high)
    if a is None or b is None:
        return None
    return (min(a, b), max(a, b))


def _entry(row: Any, *, rank: int | None) -> Entry:
    return Entry(
        rank=rank,
        participant=row.participant or "(no owner)",
        submission_id=row.id,
        score=float(row.score),
        score_ci=_interval(row.score_ci_low, row.score_ci_high),
        tied_with_above=False,
        tpot_p50_ms=_number(row.tpot_p50_ms),
        ttft_p50_ms=_number(row.ttft_p50_ms),
        tokens_per_s=_number(row.tokens_per_s),
        submitted_at=aware_utc(row.created_at),
        is_baseline=bool(row.is_baseline),
        flagged=row.review == ReviewState.FLAGGED,
        rescored_from=row.rescored_from,
    )


def _overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """Two confidence intervals share a point; without both intervals nothing is claimed."""
    if a is None or b is None:
        return False
    return a[0] <= b[1] and b[0] <= a[1]


@dataclass(frozen=True)
class Record:
    """A moment the best score improved: when, to what, by which submission."""

    at: datetime
    score: float
    submission_id: int
    participant: str


def history(session: Session, ranking: Ranking) -> list[Record]:
    """The best score over time: each eligible submission that beat every earlier one."""
    aggregate = func.min if ranking.direction == "lower" else func.max
    # The best among strictly earlier submissions (NULL for the first).
    previous_best = aggregate(Submission.score).over(
        order_by=(Submission.created_at, Submission.id), rows=(None, -1)
    )
    scored = (
        select(
            Submission.id,
            Submission.created_at,
            Submission.score,
            Submission.user_id,
            previous_best.label("previous_best"),
        )
        .where(eligible(), Submission.is_baseline.is_(False))
        .subquery()
    )
    improves = (
        scored.c.score < scored.c.previous_best
        if ranking.direction == "lower"
        else scored.c.score > scored.c.previous_best
    )
    rows = session.execute(
        select(scored.c.id, scored.c.created_at, scored.c.score, User.name)
        .join(User, User.id == scored.c.user_id, isouter=True)
        .where(scored.c.previous_best.is_(None) | improves)
        .order_by(scored.c.created_at, scored.c.id)
    )
    return [
        Record(
            at=aware_utc(row.created_at),
            score=float(row.score),
            submission_id=row.id,
            participant=row.name or "(no owner)",
        )
        for row in rows
    ]


CSV_COLUMNS = (
    "rank",
    "participant",
    "submission_id",
    "score",
    "score_ci_low",
    "score_ci_high",
    "statistically_tied_with_above",
    "tpot_p50_ms",
    "ttft_p50_ms",
    "output_tokens_per_s",
    "submitted_at",
    "baseline",
    "flagged_for_review",
    "rescored_from",
)


def csv_text(board: Leaderboard) -> str:
    """The leaderboard as CSV: ranked entries, then the baselines (rank empty)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for entry in [*board.entries, *board.baselines]:
        writer.writerow(_csv_row(entry))
    return out.getvalue()


def _csv_row(entry: Entry) -> Sequence[Any]:
    low, high = entry.score_ci if entry.score_ci else ("", "")
    return (
        entry.rank if entry.rank is not None else "",
        entry.participant,
        entry.submission_id,
        repr(entry.score),
        low,
        high,
        "yes" if entry.tied_with_above else "",
        _blank(entry.tpot_p50_ms),
        _blank(entry.ttft_p50_ms),
        _blank(entry.tokens_per_s),
        entry.submitted_at.isoformat(),
        "yes" if entry.is_baseline else "",
        "yes" if entry.flagged else "",
        entry.rescored_from or "",
    )


def _blank(value: float | None) -> Any:
    return "" if value is None else value
