"""Every Prometheus metric of the platform, defined in this one module (docs/operations.md).

Two kinds:

* **Fleet metrics**, read by :class:`FleetCollector` at scrape time from the database and from
  the queue's worker registry. Workers run on other hosts and serve no HTTP, and Prometheus'
  multiprocess mode only shares files on one host; the database already holds every result, so
  any portal's ``/metrics`` shows the whole fleet (several portals show the same numbers:
  aggregate those with ``max``, not ``sum``).
* **Portal metrics**, kept in-process by :class:`PortalMetrics`: the HTTP requests this portal
  served, and its own process figures (a portal on several processes counts their requests
  together in files, Prometheus' multiprocess mode, and has no process figures).

The fleet's histograms count every row ever finished, not a recent window: so their buckets,
``_count`` and ``_sum`` only grow (a rerun takes a row out until it finishes again, which
Prometheus reads as a counter reset), and ``rate()`` and ``histogram_quantile()`` work as on any
histogram. Each is one aggregate query (a bucket is ``SUM(CASE WHEN value <= le ...)``), so no
row leaves the database; the three are kept between scrapes until a finished result changes
(``edc.changes``), while the queue, the counts by status and the uploads are read at each scrape.
After a change they are computed again off the scrape, in the background (a pass over 100k rows
takes a few hundred milliseconds): a scrape waits for that at most ``HISTOGRAMS_WAIT_S`` and
otherwise answers with the last ones computed, behind by one computation.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy import ColumnElement, Float, case, func, select, type_coerce
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from edc import changes, db
from edc.background import BackgroundRuns
from edc.config import Settings
from edc.db import database_errors
from edc.errors import EdcError, ServiceUnavailable
from edc.models import MetricNumber, Submission
from edc.scheduler.fleet import worker_states
from edc.status import FailureReason, SubmissionStatus
from edc.tasks.task import task_hardware_class

log = logging.getLogger(__name__)

# Buckets, in seconds. An evaluation runs seconds (the bundled task) to the 15-minute ceiling.
EVALUATION_BUCKETS_S = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800, 3600)
SANDBOX_START_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
LOAD_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
# How long a scrape waits for histograms being computed again before it answers with the last.
HISTOGRAMS_WAIT_S = 0.02
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Keys of result_metrics read by the histograms. ``sandbox_start_s``: from starting the sandbox
# to the submission connecting to the harness's channel (written by the harness).
SANDBOX_START_KEY = "sandbox_start_s"
LOAD_KEY = "load_s"

FINISHED = (SubmissionStatus.COMPLETED, SubmissionStatus.FAILED)
# Set by `edc portal --processes N` (N > 1) to a fresh folder before its processes start:
# prometheus_client then keeps their counts in files there (its multiprocess mode).
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Label of a class the platform cannot name (the task directory is unreadable).
UNKNOWN_CLASS = "unknown"


def record_outcome(status: SubmissionStatus | str, reason: FailureReason | str | None) -> None:
    """Put a stored result in the worker's log, with the fields of its current log context.

    Fleet-wide counts come from the database (``edc_submissions``): a worker's own counters
    would never be scraped. This line is the per-event trail for log searches.
    """
    status_text = str(status)
    reason_text = str(reason) if reason is not None else ""
    log.info(
        "submission %s%s",
        status_text,
        f" ({reason_text})" if reason_text else "",
        extra={"outcome": status_text, "reason": reason_text},
    )


def known_hardware_class(settings: Settings) -> str:
    """The class of the competition's task (the class of submissions that do not name one), or
    ``unknown`` when the task cannot be read: a scrape must answer regardless."""
    try:
        return task_hardware_class(settings)
    except EdcError as exc:
        log.warning("metrics: the task's hardware class is unknown: %s", exc.message)
        return UNKNOWN_CLASS


def _class_column() -> Any:
    # Submissions carry their own class once the schema has the column; before, all are the task's.
    return getattr(Submission, "hardware_class", None)


class _SecondsBetween(ColumnElement[float]):
    """``end − start`` in seconds, for timestamps, on SQLite and PostgreSQL alike."""

    inherit_cache = False
    type = Float()

    def __init__(self, start: ColumnElement[Any], end: ColumnElement[Any]) -> None:
        self.start = start
        self.end = end


@compiles(_SecondsBetween, "postgresql")
def _seconds_between_pg(element: _SecondsBetween, compiler: SQLCompiler, **kw: Any) -> str:
    end, start = compiler.process(element.end, **kw), compiler.process(element.start, **kw)
    return f"CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS DOUBLE PRECISION)"


@compiles(_SecondsBetween, "sqlite")
def _seconds_between_sqlite(element: _SecondsBetween, compiler: SQLCompiler, **kw: Any) -> str:
    end, start = compiler.process(element.end, **kw), compiler.process(element.start, **kw)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


class _Histogram:
    """Accumulates (count, sum, per-bucket counts) per label set, merging rows of equal labels."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.series: dict[tuple[str, ...], list[float]] = {}

    def add(self, labels: tuple[str, ...], values: Sequence[Any] = ()) -> None:
        """``values``: count, sum, then one count per bucket (nothing: a zero series)."""
        current = self.series.setdefault(labels, [0.0] * (2 + len(self.buckets)))
        for i, value in enumerate(values):
            current[i] += float(value or 0)

    def family(
        self, name: str, documentation: str, label_names: Sequence[str]
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=label_names)
        for labels, (count, total, *below) in sorted(self.series.items()):
            buckets = [(repr(float(le)), n) for le, n in zip(self.buckets, below, strict=True)]
            family.add_metric(list(labels), [*buckets, ("+Inf", count)], total)
        return family


# Evaluation time, sandbox start, load.
_Histograms = tuple[_Histogram, _Histogram, _Histogram]


@dataclass
class _DatabaseFigures:
    depth: dict[str, int]
    oldest: dict[str, datetime]
    by_status: dict[tuple[str, str], int]
    uploads: int
    uploaded_bytes: int
    duration: _Histogram
    sandbox_start: _Histogram
    load: _Histogram

    @property
    def classes(self) -> set[str]:
        found = set(self.depth)
        for histogram in (self.duration, self.sandbox_start, self.load):
            found.update(labels[0] for labels in histogram.series)
        return found


@dataclass(frozen=True)
class _WorkerFigures:
    alive: dict[str, int]
    busy: dict[str, int]
    drifting: dict[str, int]
    silent: dict[str, int]


class FleetCollector:
    """The fleet's figures, read from the database and the worker registry at each scrape.

    A source that does not answer is reported by ``edc_metrics_source_up`` (0) and its metrics
    are left out, so the scrape itself still succeeds.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # (change counter, default class, histograms): see _histograms.
        self._cached_histograms: tuple[int, str, _Histograms] | None = None
        self._recomputations = BackgroundRuns("edc-histograms")

    def describe(self) -> Iterable[Metric]:
        return []  # nothing is read at registration

    def collect(self) -> Iterator[Metric]:
        default_class = known_hardware_class(self.settings)
        database = self._read_database(default_class)
        workers = self._read_worker_registry(default_class)
        # Every class anything mentions gets every per-class series (zero where nothing is), so
        # a series does not vanish when its class falls idle.
        classes = {default_class}
        if database is not None:
            classes |= database.classes
        if workers is not None:
            classes |= set(workers.alive) | set(workers.busy) | set(workers.silent)

        up = GaugeMetricFamily(
            "edc_metrics_source_up",
            "1 when the source was read for this scrape, 0 when it did not answer.",
            labels=["source"],
        )
        up.add_metric(["database"], int(database is not None))
        up.add_metric(["queue"], int(workers is not None))
        yield up
        if database is not None:
            yield from _database_families(database, sorted(classes))
        if workers is not None:
            yield from _worker_families(workers, sorted(classes))

    # -- the database --

    def _read_database(self, default_class: str) -> _DatabaseFigures | None:

        try:
            with database_errors(), db.session_scope(self.settings) as session:
                depth, oldest = _queue(session, default_class)
                uploads, uploaded_bytes = _uploads(session)
                return _DatabaseFigures(
                    depth,
                    oldest,
                    _by_status(session),
                    uploads,
                    uploaded_bytes,
                    *self._histograms(session, default_class),
                )
        except ServiceUnavailable as exc:
            log.warning("metrics: %s", exc.message)
            return None

    def _histograms(self, session: Session, default_class: str) -> _Histograms:
        """Evaluation time, sandbox start and load, over every finished submission: the scrape's
        costly part (a pass over every result), so kept until a finished result changes, and
        then computed again in the background while the scrape answers."""
        version = changes.counter(session)
        cached = self._cached_histograms
        if version is None or cached is None or cached[1] != default_class:
            # Nothing to answer with yet (or nothing ever finished): computed here.
            histograms = _compute_histograms(session, default_class)
            if version is not None:
                self._cached_histograms = (version, default_class, histograms)
            return histograms
        if cached[0] != version:
            run = functools.partial(self._compute, default_class)
            self._recomputations.start(None, run).join(HISTOGRAMS_WAIT_S)
        current = self._cached_histograms
        assert current is not None
        return current[2]

    def _compute(self, default_class: str) -> None:
        try:
            with database_errors(), db.session_scope(self.settings) as session:
                # The counter first: a change during the pass moves it again, and the next
                # scrape computes once more.
                version = changes.counter(session)
                histograms = _compute_histograms(session, default_class)
        except ServiceUnavailable as exc:
            log.warning("metrics: histograms not computed again: %s", exc.message)
            return
        except Exception:
            log.exception("metrics: histograms not computed again")
            return
        if version is not None:
            self._cached_histograms = (version, default_class, histograms)

    # -- the worker registry --

    def _read_worker_registry(self, default_class: str) -> _WorkerFigures | None:

        try:
            states = worker_states(self.settings)
        except ServiceUnavailable as exc:
            log.warning("metrics: %s", exc.message)
            return None
        figures = _WorkerFigures(
            defaultdict(int), defaultdict(int), defaultdict(int), defaultdict(int)
        )
        for state in states:
            klass = getattr(state, "hardware_class", None) or default_class
            if not state.alive:
                figures.silent[klass] += 1
                continue
            figures.alive[klass] += 1
            if state.submission_id is not None:
                figures.busy[klass] += 1
            if getattr(state, "drifting", False):
                figures.drifting[klass] += 1
        return figures


def _compute_histograms(session: Session, default_class: str) -> _Histograms:
    finished = Submission.status.in_(FINISHED)
    completed = Submission.status == SubmissionStatus.COMPLETED
    duration = _histogram(
        session,
        _SecondsBetween(Submission.started_at.expression, Submission.finished_at.expression),
        EVALUATION_BUCKETS_S,
        where=(finished, Submission.started_at.is_not(None)),
        by_status=True,
        default_class=default_class,
    )
    sandbox_start, load = (
        _histogram(
            session,
            MetricNumber(key),
            buckets,
            where=(completed,),
            by_status=False,
            default_class=default_class,
        )
        for key, buckets in (
            (SANDBOX_START_KEY, SANDBOX_START_BUCKETS_S),
            (LOAD_KEY, LOAD_BUCKETS_S),
        )
    )
    return duration, sandbox_start, load


def _queue(session: Session, default_class: str) -> tuple[dict[str, int], dict[str, datetime]]:
    column = _class_column()
    keys = [column] if column is not None else []
    rows = session.execute(
        select(*keys, func.count(), func.min(Submission.queued_at))
        .where(Submission.status == SubmissionStatus.QUEUED)
        .group_by(*keys)
    ).all()
    depth: dict[str, int] = defaultdict(int)
    oldest: dict[str, datetime] = {}
    for row in rows:
        klass = (row[0] if keys else None) or default_class
        depth[klass] += int(row[-2])
        if row[-1] is not None:
            first = _aware(row[-1])
            oldest[klass] = min(first, oldest.get(klass, first))
    return dict(depth), oldest


def _by_status(session: Session) -> dict[tuple[str, str], int]:
    # Every status, and every reason of a failure, is present from the start (at 0).
    counts: dict[tuple[str, str], int] = {
        (str(s), ""): 0 for s in SubmissionStatus if s is not SubmissionStatus.FAILED
    }
    counts.update({(str(SubmissionStatus.FAILED), str(r)): 0 for r in FailureReason})
    rows = session.execute(
        select(Submission.status, Submission.failure_reason, func.count()).group_by(
            Submission.status, Submission.failure_reason
        )
    ).all()
    for status, reason, count in rows:
        key = (str(status), str(reason) if reason is not None else "")
        counts[key] = counts.get(key, 0) + int(count)
    return counts


def _uploads(session: Session) -> tuple[int, int]:
    count, total = session.execute(
        select(func.count(Submission.id), func.coalesce(func.sum(Submission.size_bytes), 0))
    ).one()
    return int(count), int(total)


def _histogram(
    session: Session,
    value: ColumnElement[Any],
    buckets: Sequence[float],
    *,
    where: Sequence[ColumnElement[bool]],
    by_status: bool,
    default_class: str,
) -> _Histogram:
    column = _class_column()
    keys: list[Any] = [column] if column is not None else []
    if by_status:
        keys.append(Submission.status)
    # The value is computed once per row in a materialised CTE (a JSON path read, or a date
    # difference), not once per bucket (MATERIALIZED: PostgreSQL 12+, SQLite 3.35+); NULLs fall
    # out of COUNT, SUM and every bucket.
    rows_cte = (
        select(*keys, type_coerce(value, Float).label("value"))
        .where(*where)
        .cte("histogram_rows")
        .prefix_with("MATERIALIZED")
    )
    number = rows_cte.c.value
    grouped = [c for c in rows_cte.c if c.name != "value"]
    below = [func.sum(case((number <= le, 1), else_=0)) for le in buckets]
    rows = session.execute(
        select(*grouped, func.count(number), func.sum(number), *below).group_by(*grouped)
    ).all()
    histogram = _Histogram(buckets)
    for row in rows:
        values = list(row)
        klass = (values.pop(0) if column is not None else None) or default_class
        labels = (klass, str(values.pop(0))) if by_status else (klass,)
        histogram.add(labels, values)
    return histogram


def _database_families(figures: _DatabaseFigures, classes: list[str]) -> Iterator[Metric]:
    now = datetime.now(UTC)
    depth = GaugeMetricFamily(
        "edc_queue_depth",
        "Submissions waiting to be evaluated, per hardware class.",
        labels=["hardware_class"],
    )
    age = GaugeMetricFamily(
        "edc_queue_oldest_age_seconds",
        "How long the longest-waiting submission of the class has waited (0: none waits).",
        labels=["hardware_class"],
    )
    for klass in classes:
        depth.add_metric([klass], figures.depth.get(klass, 0))
        first = figures.oldest.get(klass)
        age.add_metric([klass], max(0.0, (now - first).total_seconds()) if first else 0.0)
    yield depth
    yield age

    by_status = GaugeMetricFamily(
        "edc_submissions",
        "Submissions in the database by status and failure reason (reason empty: none).",
        labels=["status", "reason"],
    )
    for (status, reason), count in sorted(figures.by_status.items()):
        by_status.add_metric([status, reason], count)
    yield by_status

    uploads = CounterMetricFamily("edc_uploads", "Archives accepted (one per submission).")
    uploads.add_metric([], figures.uploads)
    yield uploads
    uploaded = CounterMetricFamily("edc_uploaded_bytes", "Bytes of the archives accepted.")
    uploaded.add_metric([], figures.uploaded_bytes)
    yield uploaded

    for klass in classes:
        for status in FINISHED:
            figures.duration.add((klass, str(status)))
        figures.sandbox_start.add((klass,))
        figures.load.add((klass,))
    yield figures.duration.family(
        "edc_evaluation_duration_seconds",
        "From claim to stored result, of finished evaluations (their last attempt).",
        ["hardware_class", "status"],
    )
    yield figures.sandbox_start.family(
        "edc_sandbox_start_seconds",
        "From starting the sandbox to the submission connecting, of completed evaluations.",
        ["hardware_class"],
    )
    yield figures.load.family(
        "edc_submission_load_seconds",
        "The submission's own model load (metrics.load_s), of completed evaluations.",
        ["hardware_class"],
    )


def _worker_families(figures: _WorkerFigures, classes: list[str]) -> Iterator[Metric]:
    for name, documentation, counts in (
        ("edc_workers_alive", "Workers whose heartbeat is recent, per class.", figures.alive),
        ("edc_workers_busy", "Alive workers evaluating a submission now.", figures.busy),
        (
            "edc_workers_drifting",
            "Alive workers barred by the drift watch (baseline off the fleet's median).",
            figures.drifting,
        ),
        ("edc_workers_silent", "Registered workers whose heartbeat stopped.", figures.silent),
    ):
        family = GaugeMetricFamily(name, documentation, labels=["hardware_class"])
        for klass in classes:
            family.add_metric([klass], counts.get(klass, 0))
        yield family


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were stored as UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class PortalMetrics:
    """One portal's registry: the fleet collector plus what this portal counts itself.

    A registry per application (not the module-global default one), so several apps in one
    process, as in tests, each count their own requests. Under ``edc portal --processes N``
    (:data:`MULTIPROCESS_ENV` set before any process started) the requests of all N are counted
    together.
    """

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edc_http_requests",
            "HTTP requests this portal answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "edc_http_request_duration_seconds",
            "Time to answer an HTTP request, to the end of its body, by route template.",
            ["method", "route"],
            buckets=HTTP_BUCKETS_S,
            registry=self.registry,
        )
        self.exposed = self.registry
        if os.environ.get(MULTIPROCESS_ENV):
            # Several processes serve the port: each writes its counts to files in that folder,
            # and a scrape, whichever process answers it, sums them all. Each process's own
            # figures (memory, CPU, garbage collection) would be one process's of several, so they
            # are left out.
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed)  # type: ignore[no-untyped-call]
        else:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.exposed.register(FleetCollector(settings))

    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry in the format the scraper asked for: (body, content type)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.exposed), content_type
