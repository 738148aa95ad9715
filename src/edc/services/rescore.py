"""Results stored under an older ranking rule never outrank results under the task's current one.

A result records the figure it was ranked by (``metrics.score_metric``). When the task ranks by
another figure, each such result is either **re-scored** from what it stored, where the new figure
follows from it exactly, or marked **stale** (``score`` null: off the leaderboard) until an
organiser re-runs it. Nothing is timed again.

Where the new figure comes from:

- the result stored it already (every figure a task may rank by is also reported): taken as is;
- ``latency.e2e_per_token_ms.<q>`` from ``latency.e2e_ms.<q>``: every request produced exactly
  N = ``max_new_tokens`` tokens (the harness refuses any other count), so each request's E2E/N is
  its E2E divided by one constant, and a percentile by linear interpolation (or a mean) of values
  all divided by N is the old one divided by N. A result whose per-position ITL series shows it
  was measured with another N is not converted.

The figure taken is the one over all timed requests pooled, as ``metrics.latency`` reports it; a
fresh result's ``score`` is the median of the per-repeat figures, which were not stored. The two
estimate the same quantity from the same requests; they are not bit-equal. The old interval and
per-repeat scores were of the old figure and have no conversion: they are dropped, and the
leaderboard shows no interval (and claims no tie) for the row.

What a result held before is kept under ``superseded``. It runs at every portal start and from
``edc admin rescore``, for each track with its own task; where every result is current it is one
query that returns no row.

**Versions.** Every result records the version it is comparable by (``result_version``: the
harness's measurement version and the task's content hash, :mod:`edc.harness.measurement`). A
track's results of another version are marked stale the same way (kept, with what they held,
visible to their owners; off the board). Results from before versions were recorded take the
current one at the first pass. ``edc admin rescore --track NAME --top K`` then measures again the
K best rows of the old board that are still stale (:func:`stale_entries`), as re-measurements: on
each class's home queue, served after participants' queues, counted against no limit. A
published final is never touched: its measurements are its own.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from edc import db
from edc.config import Settings
from edc.errors import EdcError
from edc.harness.measurement import result_version
from edc.models import DEFAULT_TRACK, MetricIsTrue, MetricNumber, Submission, pooled_result
from edc.scheduler.remeasure_queue import enqueue_remeasure
from edc.services.leaderboard import team_names
from edc.services.tracks import get_track, list_tracks
from edc.status import SubmissionStatus
from edc.tasks.task import Task, bytes_content_hash_of, content_hash_of, load_task

log = logging.getLogger(__name__)

BATCH = 500
_PER_TOKEN = re.compile(r"^latency\.e2e_per_token_ms\.(p50|p90|p99|mean)$")
_QUANTILES = ("p50", "p90", "p99", "mean")


@dataclass(frozen=True)
class RescoreCounts:
    """What one pass changed."""

    metric: str  # the task's ranking metric the results now agree with
    rescored: int  # given a score under it from their stored figures
    stale: int  # kept off the leaderboard until re-run
    outdated: int = 0  # of another result version: kept off until measured again
    track: str = DEFAULT_TRACK


@dataclass(frozen=True)
class Versions:
    """The result version of a task's results now, and the older spellings of the same one."""

    current: str
    # Results stamped with one of these are of the same task and measurement: they are given
    # the current spelling, not made stale.
    same: frozenset[str] = frozenset()

    @classmethod
    def of_task(cls, task_dir: Path) -> Versions:
        return cls(
            result_version(content_hash_of(task_dir)),
            frozenset({result_version(bytes_content_hash_of(task_dir))}),
        )


def rescore_results(
    session: Session, *, task: Task, track: str = DEFAULT_TRACK, version: Versions | None = None
) -> RescoreCounts:
    """Bring every scored result of ``track`` in line with ``task.ranking.metric`` and, given
    one, with the result ``version`` (idempotent)."""
    metric = task.ranking.metric
    rescored, stale = _bring_in_line(
        session,
        track=track,
        key="score_metric",
        current=metric,
        change=lambda metrics: convert(metrics, metric=metric, max_new_tokens=task.max_new_tokens),
    )
    outdated = 0
    if version is not None:
        _, outdated = _bring_in_line(
            session,
            track=track,
            key="result_version",
            current=version.current,
            change=lambda metrics: versioned(metrics, version=version),
        )
    if rescored or stale or outdated:
        log.info(
            "track %s, results brought under %s: %d re-scored from their stored figures, %d "
            "stale, %d of another version",
            track,
            metric,
            rescored,
            stale,
            outdated,
        )
    return RescoreCounts(
        metric=metric, rescored=rescored, stale=stale, outdated=outdated, track=track
    )


def _bring_in_line(
    session: Session,
    *,
    track: str,
    key: str,
    current: str,
    change: Callable[[dict[str, Any]], dict[str, Any]],
) -> tuple[int, int]:
    """``change`` every scored result of ``track`` whose ``metrics[key]`` is not ``current``, in
    batches; returns how many stayed ranked and how many went stale."""
    stored = Submission.result_metrics[key].as_string()
    written = {False: 0, True: 0}  # by: went stale
    last_id = 0
    while True:
        rows = session.execute(
            select(Submission.id, Submission.attempt, Submission.status, Submission.result_metrics)
            .where(
                Submission.id > last_id,
                Submission.track == track,
                # The generated column: a stale row (score null) is not looked at again.
                Submission.score.is_not(None),
                or_(stored.is_(None), stored != current),
            )
            .order_by(Submission.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return written[False], written[True]
        last_id = rows[-1].id
        changes: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        for row in rows:
            metrics = row.result_metrics
            if not isinstance(metrics, dict) or metrics.get(key) == current:
                continue
            converted = change(metrics)
            changes[converted.get("stale") is True].append(
                {
                    "row_id": row.id,
                    "row_attempt": row.attempt,
                    "row_status": row.status,
                    "converted": converted,
                }
            )
        for went_stale, batch in changes.items():
            written[went_stale] += _write(session, batch)


def versioned(metrics: dict[str, Any], *, version: Versions) -> dict[str, Any]:
    """The result under the current ``version``: stale when it recorded another; stamped with it
    when it recorded none (measured before versions were recorded) or an older spelling of it."""
    old = metrics.get("result_version")
    if old is None or old in version.same:
        return {**metrics, "result_version": version.current}
    return {
        **metrics,
        "superseded": {"version": old, "score": metrics.get("score")},
        "score": None,
        "stale": True,
        "stale_version": old,
    }


# Unchanged since it was read: a rerun (a new attempt) clears the result and must not get this
# old one back. Core, not ORM: one executemany per batch (a round trip per row is ~1 ms).
_table = cast(Table, Submission.__table__)
_WRITE = (
    update(_table)
    .where(
        _table.c.id == bindparam("row_id"),
        _table.c.attempt == bindparam("row_attempt"),
        _table.c.status == bindparam("row_status"),
    )
    .values(result_metrics=bindparam("converted"))
)


def _write(session: Session, changes: list[dict[str, Any]]) -> int:
    """Store the converted results; how many rows were still as read."""
    if not changes:
        return 0
    return int(session.execute(_WRITE, changes).rowcount)  # type: ignore[attr-defined]


def rescore_configured(settings: Settings) -> list[RescoreCounts]:
    """:func:`rescore_results` for every track with its own task and current version, each in
    a transaction of its own."""
    with db.session_scope(settings) as session:
        tracks = list_tracks(session, settings)
    counts = []
    for track in tracks:
        try:
            task = load_task(settings, track.task_dir)
            version = Versions.of_task(track.task_dir)
        except (EdcError, OSError) as exc:  # one broken track must not keep the others stale
            log.warning(
                "track %s: its task does not load, its results are left as they are: %s",
                track.name,
                exc,
            )
            continue
        with db.session_scope(settings) as session:
            counts.append(rescore_results(session, task=task, track=track.name, version=version))
    return counts


def convert(metrics: dict[str, Any], *, metric: str, max_new_tokens: int) -> dict[str, Any]:
    """The result's metrics ranked under ``metric``: re-scored where exact, else stale."""
    old_metric = metrics.get("score_metric")
    superseded = {
        "metric": old_metric if isinstance(old_metric, str) else None,
        "score": metrics.get("score"),
        "score_ci": metrics.get("score_ci"),
        "score_repeats": metrics.get("score_repeats"),
    }
    out = {**metrics, "superseded": superseded, "score_ci": None, "score_repeats": None}
    score = _stored(metrics, metric)
    if score is None:
        per_token = _per_token_figures(metrics, metric=metric, n=max_new_tokens)
        if per_token is not None:
            out["latency"] = {**metrics["latency"], "e2e_per_token_ms": per_token}
            score = _stored(out, metric)
    if score is None:
        out.update(score=None, stale=True, stale_metric=superseded["metric"])
        return out
    out.update(score=score, score_metric=metric, rescored_from=superseded["metric"])
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _stored(metrics: dict[str, Any], dotted: str) -> float | None:
    """The number at ``dotted`` (``latency.e2e_ms.p50``) in the metrics, if there is one."""
    node: Any = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return _number(node)


def _per_token_figures(metrics: dict[str, Any], *, metric: str, n: int) -> dict[str, float] | None:
    """``latency.e2e_per_token_ms`` from ``latency.e2e_ms``, or None when not exactly possible."""
    latency = metrics.get("latency")
    e2e = latency.get("e2e_ms") if isinstance(latency, dict) else None
    if _PER_TOKEN.match(metric) is None or not isinstance(e2e, dict) or n < 1:
        return None
    # The per-position ITL series is N − 1 long: a result measured with another N (the task's
    # max_new_tokens changed since) cannot be divided by the current one.
    series = metrics.get("itl_ms_by_position")
    if isinstance(series, list) and len(series) != n - 1:
        return None
    figures = {q: v / n for q in _QUANTILES if (v := _number(e2e.get(q))) is not None}
    return figures or None


@dataclass(frozen=True)
class StaleEntry:
    """A leaderboard row gone stale, represented by the run to measure again."""

    submission_id: int
    attempt: int
    # What the row stood at before it went stale: its archive's median old score (a baseline's
    # own), None when no old score was kept.
    old_score: float | None
    created_at: Any


# What a run scored before it went stale: kept by rescore, or by the re-measurement that made it
# current again (read in the database: no JSON is loaded).
_OLD_SCORE = func.coalesce(
    MetricNumber("superseded", "score"), MetricNumber("remeasured_from", "superseded", "score")
)


@dataclass
class _Archive:
    """One board row's candidate: an entrant's archive (or a baseline) and its old runs."""

    first_at: Any  # its first old run's time: among equal rows the earlier goes first
    old_scores: list[float] = field(default_factory=list)
    newest_stale: Any = None  # the run to measure again; None once none is stale


def stale_entries(session: Session, *, track: str, direction: str) -> list[StaleEntry]:
    """``track``'s rows that are still stale, in the old board's order: best old score first,
    the earlier first among equals.

    A row is a participant's, or its team's, as the board shows them: the entrant's best archive
    by the median of its runs' old scores (runs of one archive pool, as on the board),
    represented by its newest stale run. A row whose best archive is current again (measured
    again, or uploaded again) is back on the board and not offered, so running ``rescore --top
    K`` again goes on down the old board. Each baseline is a row of its own. Runs of deleted
    accounts fill no row and are left out, baselines aside.
    """
    teams = team_names(session)

    def entrant(user_id: int) -> tuple[str, Any]:
        team = teams.get(user_id)
        return ("team", team) if team is not None else ("user", user_id)

    current = {
        (entrant(user_id), sha256)
        for user_id, sha256 in session.execute(
            select(Submission.user_id, Submission.sha256)
            .where(Submission.track == track, pooled_result())
            .distinct()
        )
        if user_id is not None
    }
    stale = and_(Submission.score.is_(None), MetricIsTrue("stale"))
    runs = session.execute(
        select(
            Submission.id,
            Submission.attempt,
            Submission.user_id,
            Submission.sha256,
            Submission.is_baseline,
            Submission.created_at,
            stale.label("stale"),
            _OLD_SCORE.label("old_score"),
        )
        .where(
            Submission.track == track,
            Submission.status == SubmissionStatus.COMPLETED,
            Submission.disqualified.is_(False),
            or_(Submission.user_id.is_not(None), Submission.is_baseline.is_(True)),
            or_(stale, MetricNumber("remeasured_from", "superseded", "score").is_not(None)),
        )
        .order_by(Submission.created_at, Submission.id)
    )
    archives: dict[tuple[Any, ...], _Archive] = {}
    for run in runs:  # oldest first
        if run.is_baseline:
            key: tuple[Any, ...] = ("baseline", run.id)
        else:
            key = (entrant(run.user_id), run.sha256)
        archive = archives.setdefault(key, _Archive(first_at=run.created_at))
        if run.old_score is not None:
            archive.old_scores.append(float(run.old_score))
        if run.stale:
            archive.newest_stale = run
    sign = 1.0 if direction == "lower" else -1.0

    def median(archive: _Archive) -> float | None:
        return statistics.median(archive.old_scores) if archive.old_scores else None

    def standing(archive: _Archive) -> tuple[bool, float, Any]:
        old = median(archive)
        return old is None, sign * (old or 0.0), archive.first_at

    best: dict[Any, tuple[tuple[Any, ...], _Archive]] = {}
    for key, archive in archives.items():  # in the order of their first runs
        board_row = key if key[0] == "baseline" else key[0]
        held = best.get(board_row)
        if held is None or standing(archive)[:2] < standing(held[1])[:2]:
            best[board_row] = (key, archive)
    chosen = sorted(
        (archive for key, archive in best.values() if key not in current),
        key=standing,
    )
    return [
        StaleEntry(run.id, run.attempt, median(archive), run.created_at)
        for archive in chosen
        if (run := archive.newest_stale) is not None
    ]


def remeasure_stale(settings: Settings, track_name: str | None, *, top_k: int) -> list[int]:
    """Bring the track's results in line (:func:`rescore_results`), then queue the
    re-measurements of the ``top_k`` best stale rows (:func:`stale_entries`); returns their
    submission ids."""
    with db.session_scope(settings) as session:
        track = get_track(session, settings, track_name)
    task = load_task(settings, track.task_dir)
    version = Versions.of_task(track.task_dir)
    with db.session_scope(settings) as session:
        rescore_results(session, task=task, track=track.name, version=version)
    with db.session_scope(settings) as session:
        chosen = stale_entries(session, track=track.name, direction=task.ranking.direction)
    chosen = chosen[:top_k]
    for entry in chosen:
        enqueue_remeasure(
            settings, entry.submission_id, entry.attempt, hardware_class=task.hardware.kind
        )
    return [entry.submission_id for entry in chosen]
