"""The one definition of ranking, used by the leaderboard page, the API and the CSV export.

- An **entry** is one participant's runs of one archive: their completed, correct, scored, not
  disqualified submissions with the same sha256 (baselines aside). Its score is the median of
  the runs' scores; its interval is the run's own ``score_ci`` for a single run, and for several
  the middle 95% of the runs' scores, at least as wide as their own intervals on average (see
  :func:`pool_of`).
  Submitting the same archive again therefore adds a measurement instead of another draw at a
  lucky score. (Changing one byte makes a new entry: that is not the defence against luck, the
  honest interval and the final ranking are, see :mod:`edc.services.finals`.)
- Each participant's best entry is ranked: best by the task's direction (``lower`` or
  ``higher``); among equal scores the archive submitted earlier wins. An entry whose interval
  overlaps the interval of the entry above it is marked statistically tied with it: its place
  may be noise.
- Baselines (submissions an admin marked) are listed apart, each one, unranked.
- A result flagged for review (faster than the task's physical floor) stays ranked, marked, until
  an organiser clears it or disqualifies the submission; an entry is flagged when any of its runs
  is.
- A result ranked under an older metric is re-scored or kept off (see :mod:`edc.services.rescore`);
  a re-scored one has no interval, so alone it claims no tie and none is claimed against it.

Failed, cancelled and disqualified submissions never appear. Each participant costs one probe for
their best run (partial index ``ix_submissions_best``); only a participant whose best run has
company has their pools aggregated (partial index ``ix_submissions_pool``, in (user, sha256,
score) order), see :func:`_best_pools`. On PostgreSQL all of it is one statement; on SQLite (the
small embedded default) the pools of those participants are computed here from their runs'
scores, by the same :func:`pool_of`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    type_coerce,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import Grouping

from edc.clock import aware_utc
from edc.config import Settings
from edc.models import (
    DEFAULT_TRACK,
    Submission,
    Team,
    User,
    pooled_result,
    ranked_result,
    utcnow,
)
from edc.services.exports import csv_document
from edc.status import ReviewState
from edc.tasks.task import task_at, task_dir

Direction = Literal["lower", "higher"]


@dataclass(frozen=True)
class Ranking:
    """How the task ranks: a metric name (under ``metrics.``) and which way is better."""

    metric: str
    direction: Direction
    # The track whose submissions it ranks: each track has its own board.
    track: str = DEFAULT_TRACK

    def better(self, a: float, b: float) -> bool:
        return a < b if self.direction == "lower" else a > b


def ranking_of(task_dir: Path, track: str) -> Ranking:
    """The ranking rule of the task at ``task_dir`` for the board of ``track``."""
    rule = task_at(task_dir).ranking
    return Ranking(metric=rule.metric, direction=rule.direction, track=track)


def task_ranking(settings: Settings) -> Ranking:
    """The default track's ranking rule: the configured task's."""
    return ranking_of(task_dir(settings), DEFAULT_TRACK)


@dataclass(frozen=True)
class Entry:
    """One row of the leaderboard."""

    rank: int | None  # None for baselines
    participant: str
    # The entry's first submission of its archive (the runs it pools share its sha256).
    submission_id: int
    score: float
    score_ci: tuple[float, float] | None
    # The interval overlaps the one of the entry ranked just above.
    tied_with_above: bool
    # Reported figures, of the first submission's run (only the score is pooled).
    tpot_p50_ms: float | None
    ttft_p50_ms: float | None
    tokens_per_s: float | None
    submitted_at: datetime
    is_baseline: bool
    # Faster than the task's physical floor, not yet cleared by an organiser.
    flagged: bool = False
    # Converted from a result ranked under this older metric (see edc.services.rescore).
    rescored_from: str | None = None
    # How many runs (submissions of the same archive, or a final's measurements) it pools.
    runs: int = 1


@dataclass(frozen=True)
class Leaderboard:
    ranking: Ranking
    entries: list[Entry]
    baselines: list[Entry]
    generated_at: datetime


def eligible() -> ColumnElement[bool]:
    """Submissions that may appear on the leaderboard at all."""
    return ranked_result()


# The middle 95% of pooled runs: where another evaluation of the entry lands.
BAND = (0.025, 0.975)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile of sorted values, interpolated linearly between neighbours:
    PostgreSQL's ``percentile_cont``, step for step, so both ways of pooling agree."""
    if not ordered:
        raise ValueError("no values")
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    first, second = ordered[low], ordered[high]
    return first + (second - first) * (position - low)


@dataclass(frozen=True)
class Pooled:
    """What several runs of one thing say together."""

    runs: int
    median: float
    # See pool_of; None for a single run, whose own interval stands.
    interval: tuple[float, float] | None


@dataclass(frozen=True)
class Run:
    """One run's figures, as pooling reads them."""

    score: float
    # The run's own interval (metrics.score_ci), where it has one.
    low: float | None = None
    high: float | None = None


def pool_of(runs: Sequence[Run]) -> Pooled:
    """The median of per-run scores, and an interval for another run of the same code.

    Per-run scores are pooled, not the repeats inside each run: the repeats of one run share its
    prompts, its process and its minute on the machine, so pooling them would count one run's
    luck many times over; what varies between runs is the run's score.

    The interval spans the middle 95% of the runs' scores (2.5th to 97.5th percentile), widened
    where needed to the runs' own interval on average (the mean of their lows, the mean of their
    highs), which is already a prediction interval for another run (docs/uncertainty.md): two or
    three runs that happen to agree do not claim more certainty than one calibrated run. Like a
    run's own interval, and unlike a bootstrap interval of the median, it does not narrow as runs
    are added, so resubmitting buys neither a better score nor fewer ties. It is what the
    database computes in the same pass as the median.
    """
    ordered = sorted(r.score for r in runs)
    low, high = percentile(ordered, BAND[0]), percentile(ordered, BAND[1])
    own_lows = [r.low for r in runs if r.low is not None]
    own_highs = [r.high for r in runs if r.high is not None]
    return _pooled(
        len(ordered),
        (
            low,
            percentile(ordered, 0.5),
            high,
            math.fsum(own_lows) / len(own_lows) if own_lows else None,
            math.fsum(own_highs) / len(own_highs) if own_highs else None,
        ),
    )


def _pooled(runs: int, stats: Sequence[float | None]) -> Pooled:
    """A pool from (2.5th, 50th, 97.5th percentile of the scores, mean low, mean high)."""
    low, median, high, own_low, own_high = stats
    assert low is not None and median is not None and high is not None
    if runs < 2:
        return Pooled(runs=runs, median=median, interval=None)
    if own_low is not None and own_high is not None:
        low, high = min(low, own_low, own_high), max(high, own_low, own_high)
    return Pooled(runs=runs, median=median, interval=(low, high))


# One participant's best entry: the row shown for it (its first submission's), the pool, and
# whether any of its runs is flagged for review.
Draft = tuple[Any, "Pooled", bool]


def _best_pools(session: Session, ranking: Ranking) -> list[Draft]:
    """Each participant's best entry, unranked.

    A participant's best run alone is their best entry unless it has company: another run of the
    same archive (its pool's median may be worse), or another run with the very same score (an
    equal pool may have been submitted earlier). Every other pool's median is worse than that
    run's score, since none of its runs is as good. So one probe per participant settles most of
    them; only a participant whose best run has company has all their pools computed. The cost
    grows with participants and with the runs of those who resubmitted, not with every
    submission.
    """
    if session.get_bind().dialect.name == "postgresql":
        # A thousand small index probes: JIT compilation (tens of ms) never pays for itself here,
        # yet the planner's estimate can ask for it (a freshly loaded table not yet vacuumed).
        connection = session.connection()
        connection.execute(text("SET LOCAL jit = off"))
        drafts: list[Draft] = []
        # Core execution: the rows are plain values, no ORM entity is loaded.
        for row in connection.execute(_best_entries_in_database(ranking)):
            if row.runs is None:  # the best run alone
                single = Pooled(runs=1, median=float(row.best_score), interval=None)
                drafts.append((row, single, bool(row.best_flagged)))
            else:
                stats = [row.low, row.median, row.high, row.own_low, row.own_high]
                drafts.append((row, _pooled(row.runs, stats), bool(row.flag)))
        return drafts
    return _best_entries_here(session, ranking)


def _best_first(ranking: Ranking, runs: Any = Submission) -> tuple[Any, ...]:
    score = runs.score.asc() if ranking.direction == "lower" else runs.score.desc()
    return (score, runs.created_at.asc(), runs.id.asc())


def _best_run_id(ranking: Ranking) -> Any:
    """The participant's best run: a probe per participant on ix_submissions_best."""
    runs = aliased(Submission)
    return (
        select(runs.id)
        .where(runs.user_id == User.id, runs.track == ranking.track, pooled_result(runs))
        .order_by(*_best_first(ranking, runs))
        .limit(1)
        .correlate(User)
        .scalar_subquery()
    )


def _has_company(
    track: str, user_id: Any, run_id: Any, sha256: Any, score: Any
) -> ColumnElement[bool]:
    """Another ranked run of the participant in the track has the best run's archive, or its
    very score."""

    def another(alike: ColumnElement[bool]) -> ColumnElement[bool]:
        return (
            select(literal_column("1"))
            .where(alike)
            .where(
                other.track == track,
                other.user_id == user_id,
                other.id != run_id,
                pooled_result(other),
            )
            .correlate_except(other)
            .exists()
        )

    other = aliased(Submission)
    by_archive = another(other.sha256 == sha256)
    other = aliased(Submission)
    by_score = another(other.score == score)
    # Two probes, each on an index (an OR inside one would scan all the participant's runs).
    return or_(by_archive, by_score)


def _pool_stats(runs: Any) -> tuple[Any, list[Any]]:
    """The aggregates of one archive's runs (see pool_of), and its median to order by."""
    # Constants written into the statement: the percentiles share one sort, and the median
    # ordered by below is the very same aggregate as the one selected, computed once.
    fractions: ColumnElement[Any] = literal_column(
        f"ARRAY[{BAND[0]!r}, 0.5, {BAND[1]!r}]::float8[]"
    )
    stats = type_coerce(
        Grouping(func.percentile_cont(fractions).within_group(runs.score.asc())),
        postgresql.ARRAY(Float),
    )

    def nth(index: int) -> Any:  # PostgreSQL arrays count from 1
        return type_coerce(stats[literal_column(str(index))], Float)

    return nth(2), [
        func.count().label("runs"),
        nth(1).label("low"),
        nth(2).label("median"),
        nth(3).label("high"),
        func.avg(runs.score_ci_low).label("own_low"),
        func.avg(runs.score_ci_high).label("own_high"),
        # Ids follow upload order: the archive's first submission.
        func.min(runs.id).label("first_id"),
        func.bool_or(runs.review == literal_column(f"'{ReviewState.FLAGGED.value}'")).label("flag"),
    ]


@functools.cache  # built once per ranking: building it costs more than running it
def _best_entries_in_database(ranking: Ranking) -> Select[Any]:
    """One statement: per participant, the best run (an index-only probe on
    ix_submissions_best) and whether it has company; only then (a lateral subquery the database
    skips otherwise) the best of their pools, from ix_submissions_pool; and the row shown."""
    first = aliased(Submission, name="first")
    best = (
        select(first.id, first.user_id, first.score, first.sha256, first.review)
        .where(first.user_id == User.id, first.track == ranking.track, pooled_result(first))
        .order_by(*_best_first(ranking, first))
        .limit(1)
        .lateral("best")
    )
    runs = aliased(Submission, name="runs")
    median, stats = _pool_stats(runs)
    pool = (
        select(*stats)
        .where(
            runs.user_id == User.id,
            runs.track == ranking.track,
            pooled_result(runs),
            _has_company(ranking.track, best.c.user_id, best.c.id, best.c.sha256, best.c.score),
        )
        .correlate_except(runs)
        .group_by(runs.sha256)
        .order_by(
            median.asc() if ranking.direction == "lower" else median.desc(),
            func.min(runs.id),
        )
        .limit(1)
        .lateral("pool")
    )
    shown = aliased(Submission, name="shown")
    return (
        select(
            *_shown(shown),
            best.c.score.label("best_score"),
            # Compared here: no enum to convert for every row.
            (best.c.review == literal_column(f"'{ReviewState.FLAGGED.value}'")).label(
                "best_flagged"
            ),
            pool.c.runs,
            pool.c.low,
            pool.c.median,
            pool.c.high,
            pool.c.own_low,
            pool.c.own_high,
            pool.c.flag,
        )
        .select_from(User)
        .join(best, true())
        .outerjoin(pool, true())
        .join(shown, shown.id == func.coalesce(pool.c.first_id, best.c.id))
    )


def _best_entries_here(session: Session, ranking: Ranking) -> list[Draft]:
    """What :func:`_best_entries_in_database` finds, the pools computed here (SQLite)."""
    best = aliased(Submission, name="best")
    drafts: list[Draft] = []
    pooling: list[int] = []
    for row in session.execute(
        select(
            *_shown(best),
            best.score,
            best.review,
            _has_company(ranking.track, best.user_id, best.id, best.sha256, best.score).label(
                "has_company"
            ),
        )
        .select_from(User)
        .join(best, best.id == _best_run_id(ranking))
    ):
        if row.has_company:
            pooling.append(row.user_id)
        else:
            single = Pooled(runs=1, median=float(row.score), interval=None)
            drafts.append((row, single, row.review == ReviewState.FLAGGED))
    if pooling:
        drafts.extend(_best_pooled_here(session, ranking, pooling))
    return drafts


def _as_teams(session: Session, ranking: Ranking, drafts: list[Draft]) -> list[Draft]:
    """One draft per team in place of its members' own: the team's best pool, runs of one
    archive pooled whoever of them submitted them, shown under the team's name.

    Where no archive was run by two of a team's members, its pools are its members' pools, so
    its best is the best of their best entries, already drafted. Only a team with an archive
    shared between members has its pools computed again over all their runs.
    """
    teams = team_names(session)
    playing = {teams[row.user_id] for row, _, _ in drafts if row.user_id in teams}
    if not playing:
        return drafts
    # Distinct (team, archive, member) first, then archives with two members: two hash
    # aggregates, where COUNT(DISTINCT ...) sorted every run of every team (26 ms at 100k, now 15).
    runs_by_member = (
        select(User.team_id, Submission.sha256, Submission.user_id)
        .join(User, User.id == Submission.user_id)
        .where(User.team_id.is_not(None), Submission.track == ranking.track, pooled_result())
        .distinct()
        .subquery()
    )
    shared = set(
        session.scalars(
            select(Team.name)
            .join(runs_by_member, runs_by_member.c.team_id == Team.id)
            .group_by(Team.name, runs_by_member.c.sha256)
            .having(func.count() > 1)
        )
    )
    # Within one entrant, as among one participant's pools: equal medians go by upload order.
    sign = 1.0 if ranking.direction == "lower" else -1.0
    best: dict[str, Draft] = {}
    for draft in drafts:
        team = teams.get(draft[0].user_id)
        if team is None or team in shared:
            continue
        held = best.get(team)
        if held is None or (sign * draft[1].median, draft[0].id) < (
            sign * held[1].median,
            held[0].id,
        ):
            best[team] = draft
    members = [user_id for user_id, name in teams.items() if name in shared & playing]
    if members:
        best.update(
            (teams[row.user_id], (row, pooled, flag))
            for row, pooled, flag in _best_pooled_here(
                session, ranking, members, entrant=teams.__getitem__
            )
        )
    return [d for d in drafts if d[0].user_id not in teams] + [
        (SimpleNamespace(**{**row._asdict(), "participant": team}), pooled, flag)
        for team, (row, pooled, flag) in best.items()
    ]


def team_names(session: Session) -> dict[int, str]:
    """The name each team member's entries go by: their team's (users in no team are absent)."""
    return {
        user_id: name
        for user_id, name in session.execute(
            select(User.id, Team.name).join(Team, Team.id == User.team_id)
        )
    }


def _best_pooled_here(
    session: Session,
    ranking: Ranking,
    users: list[int],
    entrant: Callable[[int], str] = str,
) -> list[Draft]:
    """The best pool of each entrant (by default each of ``users``; ``entrant`` names whose
    runs a user's are: its team's)."""
    runs = session.execute(
        select(
            Submission.user_id,
            Submission.sha256,
            Submission.score,
            Submission.score_ci_low,
            Submission.score_ci_high,
            Submission.id,
            Submission.review,
        )
        .where(pooled_result(), Submission.track == ranking.track, Submission.user_id.in_(users))
        .order_by(Submission.user_id, Submission.sha256, Submission.id)
    )
    sign = 1.0 if ranking.direction == "lower" else -1.0
    # Equal pools: the one first uploaded (its first run's id), as PostgreSQL's pool query picks.
    best: dict[str, tuple[float, int, Pooled, bool]] = {}
    ordered = sorted(runs, key=lambda r: (entrant(r.user_id), r.sha256, r.id))
    for (who, _sha), group in itertools.groupby(
        ordered, key=lambda r: (entrant(r.user_id), r.sha256)
    ):
        rows = list(group)
        pooled = pool_of(
            [Run(float(r.score), _number(r.score_ci_low), _number(r.score_ci_high)) for r in rows]
        )
        candidate = (
            sign * pooled.median,
            rows[0].id,
            pooled,
            any(r.review == ReviewState.FLAGGED for r in rows),
        )
        if who not in best or candidate[:2] < best[who][:2]:
            best[who] = candidate
    by_first = {first_id: (pooled, flagged) for _, first_id, pooled, flagged in best.values()}
    shown = session.execute(
        select(*_shown())
        .select_from(Submission)
        .join(User, User.id == Submission.user_id)
        .where(Submission.id.in_(list(by_first)))
    )
    return [(row, *by_first[row.id]) for row in shown]


def _shown(rows: Any = Submission) -> list[Any]:
    """What an entry shows of its first submission's row."""
    return [
        User.name.label("participant"),
        rows.user_id,
        rows.id,
        rows.score_ci_low,
        rows.score_ci_high,
        rows.tpot_p50_ms,
        rows.ttft_p50_ms,
        rows.tokens_per_s,
        rows.created_at,
        rows.result_metrics["rescored_from"].as_string().label("rescored_from"),
    ]


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


def _baselines(track: str) -> Select[Any]:
    return (
        select(*_columns())
        .select_from(Submission)
        .join(User, User.id == Submission.user_id, isouter=True)
        # "= true" (not "IS true") so PostgreSQL can use ix_submissions_baseline.
        .where(eligible(), Submission.is_baseline == true(), Submission.track == track)
    )


def compute(session: Session, ranking: Ranking) -> Leaderboard:
    rows = session.execute(_baselines(ranking.track))
    baselines = _sorted(ranking, [_entry(row, rank=None) for row in rows])
    return Leaderboard(
        ranking=ranking,
        entries=_ranked_pools(ranking, _as_teams(session, ranking, _best_pools(session, ranking))),
        baselines=baselines,
        generated_at=utcnow(),
    )


def ranked(ranking: Ranking, entries: Sequence[Entry]) -> list[Entry]:
    """``entries`` in ranking order, numbered, each marked tied or not with the one above it."""
    ordered = _sorted(ranking, entries)
    return [
        replace(entry, rank=rank, tied_with_above=tied)
        for entry, (rank, tied) in zip(ordered, _places([e.score_ci for e in ordered]), strict=True)
    ]


def _places(intervals: Sequence[tuple[float, float] | None]) -> list[tuple[int, bool]]:
    """(rank, tied with the one above) of each interval, in ranking order: the one tie rule of
    every board (the provisional one, a final's)."""
    return [
        (index + 1, index > 0 and _overlap(intervals[index - 1], interval))
        for index, interval in enumerate(intervals)
    ]


def _ranked_pools(ranking: Ranking, drafts: list[Draft]) -> list[Entry]:
    """:func:`ranked` for the pools of :func:`_best_pools`, each entry made once (a thousand
    participants make this the leaderboard's hot loop)."""
    sign = 1.0 if ranking.direction == "lower" else -1.0
    # created_at as stored: from one database, all naive (SQLite) or all aware (PostgreSQL).
    drafts.sort(key=lambda d: (sign * d[1].median, d[0].created_at, d[0].id))
    intervals = [
        pooled.interval
        if pooled.interval is not None
        else _interval(row.score_ci_low, row.score_ci_high)
        for row, pooled, _ in drafts
    ]
    return [
        _pooled_entry(row, pooled, flagged, interval, rank=rank, tied=tied)
        for (row, pooled, flagged), interval, (rank, tied) in zip(
            drafts, intervals, _places(intervals), strict=True
        )
    ]


def _sorted(ranking: Ranking, entries: Sequence[Entry]) -> list[Entry]:
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


def _pooled_entry(
    row: Any,
    pooled: Pooled,
    flagged: bool,
    interval: tuple[float, float] | None,
    *,
    rank: int,
    tied: bool,
) -> Entry:
    """The entry of one archive's pooled runs, shown through its first submission's row."""
    return Entry(
        rank=rank,
        participant=row.participant,
        submission_id=row.id,
        score=pooled.median,
        score_ci=interval,
        tied_with_above=tied,
        tpot_p50_ms=_number(row.tpot_p50_ms),
        ttft_p50_ms=_number(row.ttft_p50_ms),
        tokens_per_s=_number(row.tokens_per_s),
        submitted_at=aware_utc(row.created_at),
        is_baseline=False,
        flagged=flagged,
        rescored_from=row.rescored_from,
        runs=pooled.runs,
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
    """The best score over time: each eligible submission that beat every earlier one, named
    as the board names its entry (a team member's under the team's name)."""
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
        .where(eligible(), Submission.is_baseline.is_(False), Submission.track == ranking.track)
        .subquery()
    )
    improves = (
        scored.c.score < scored.c.previous_best
        if ranking.direction == "lower"
        else scored.c.score > scored.c.previous_best
    )
    rows = session.execute(
        select(scored.c.id, scored.c.created_at, scored.c.score, scored.c.user_id, User.name)
        .join(User, User.id == scored.c.user_id, isouter=True)
        .where(scored.c.previous_best.is_(None) | improves)
        .order_by(scored.c.created_at, scored.c.id)
    ).all()
    teams = team_names(session) if rows else {}
    return [
        Record(
            at=aware_utc(row.created_at),
            score=float(row.score),
            submission_id=row.id,
            participant=teams.get(row.user_id) or row.name or "(no owner)",
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
    "runs",
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
    return csv_document(CSV_COLUMNS, (_csv_row(e) for e in [*board.entries, *board.baselines]))


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
        entry.runs,
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
