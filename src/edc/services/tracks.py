"""Tracks: the tasks one platform runs, each with its own submissions and leaderboard.

::

    add_track(session, settings, name="a100", task_dir=Path("/srv/edc/tasks/llama1b"))
    track = get_track(session, settings, None)       # the only track, else the default one
    track.task(); track.ranking(); track.hardware_class

Every platform has the track ``default``, judged by the configured task (``EDC_TASK_DIR``, else
the bundled one); every row from before tracks existed belongs to it. Naming no track means it:
a platform that added others still has a default one, where the old API routes answer. A track's
task directory is checked when it is added (it must load as a task) and read again whenever
task.toml changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edc.clock import aware_utc
from edc.config import Settings
from edc.errors import Conflict, InvalidInput, InvalidTask, NotFound
from edc.models import DEFAULT_TRACK, DEVELOPMENT, Track
from edc.schemas import TRACK_MAX_LIMIT
from edc.services.leaderboard import Ranking, ranking_of
from edc.services.rules import Limits, Window
from edc.tasks.task import Task, hardware_class_of, task_at, task_dir

TRACK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class TrackInfo:
    name: str
    task_dir: Path  # resolved: the configured task's for a track that names none
    phase: str = DEVELOPMENT
    opens_at: datetime | None = None  # None: the platform's start
    closes_at: datetime | None = None  # None: the platform's end
    submissions_per_day: int | None = None  # None: the platform's
    max_queued_per_user: int | None = None  # None: the platform's
    # Told of a new rank 1 and of a published final; None: nobody. A secret (the URL is the key
    # to a channel): for organisers only, and kept out of the repr, hence out of logs.
    webhook_url: str | None = field(default=None, repr=False)

    def window(self, settings: Settings) -> Window:
        """Its upload window: its own bounds, else the platform's."""
        platform = Window.from_settings(settings)
        return Window(self.opens_at or platform.start, self.closes_at or platform.end)

    def limits(self, settings: Settings) -> Limits:
        """Each participant's allowance in it: its own, else the platform's."""
        platform = Limits.from_settings(settings)
        return Limits(
            self.submissions_per_day or platform.per_day,
            self.max_queued_per_user or platform.max_waiting,
        )

    @classmethod
    def configured(cls, settings: Settings) -> TrackInfo:
        """The default track as configured, without asking the database (its name and task)."""
        return cls(name=DEFAULT_TRACK, task_dir=task_dir(settings))

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_TRACK

    @property
    def final_track(self) -> str | None:
        """How its finals name it: none for the default track (as finals did before tracks)."""
        return None if self.is_default else self.name

    @property
    def hardware_class(self) -> str:
        return hardware_class_of(self.task_dir)

    def task(self) -> Task:
        return task_at(self.task_dir)

    def ranking(self) -> Ranking:
        return ranking_of(self.task_dir, self.name)


def _aware(moment: datetime | None) -> datetime | None:
    return aware_utc(moment) if moment is not None else None  # SQLite's come back naive


def _info(settings: Settings, row: Track) -> TrackInfo:
    # The default track is the configured task's, whatever its row says.
    named = row.task_dir if row.name != DEFAULT_TRACK else None
    root = Path(named) if named else task_dir(settings)
    return TrackInfo(
        name=row.name,
        task_dir=root,
        phase=row.phase,
        opens_at=_aware(row.opens_at),
        closes_at=_aware(row.closes_at),
        submissions_per_day=row.submissions_per_day,
        max_queued_per_user=row.max_queued_per_user,
        webhook_url=row.webhook_url,
    )


# Built once: each upload looks its track up twice, and building the query cost more than it.
_TRACK_NAMED = select(Track).where(Track.name == bindparam("name"))


def _row(session: Session, name: str) -> Track | None:
    return session.scalar(_TRACK_NAMED, {"name": name})


def _default(session: Session, settings: Settings) -> TrackInfo:
    # Whether or not its row is there (the migration writes one; opening its final, if not).
    row = _row(session, DEFAULT_TRACK)
    if row is not None:
        return _info(settings, row)
    return TrackInfo.configured(settings)


def list_tracks(session: Session, settings: Settings) -> list[TrackInfo]:
    """The default track first, then the others by name."""
    rows = session.scalars(select(Track).where(Track.name != DEFAULT_TRACK).order_by(Track.name))
    return [_default(session, settings), *(_info(settings, row) for row in rows)]


def get_track(session: Session, settings: Settings, name: str | None) -> TrackInfo:
    """The track called ``name``; with no name, the default one."""
    if name is None or name == DEFAULT_TRACK:
        return _default(session, settings)
    # A name no track can have (a NUL byte, say, which PostgreSQL refuses) is not looked up.
    row = _row(session, name) if TRACK_NAME.match(name) else None
    if row is None:
        known = ", ".join(t.name for t in list_tracks(session, settings))
        raise NotFound(f"There is no track {name!r}; the tracks are: {known}.")
    return _info(settings, row)


def add_track(
    session: Session,
    settings: Settings,
    *,
    name: str,
    task_dir: Path,
    opens_at: datetime | None = None,
    closes_at: datetime | None = None,
    submissions_per_day: int | None = None,
    max_queued_per_user: int | None = None,
) -> TrackInfo:
    """Register the task at ``task_dir`` as the track ``name``, open for uploads from
    ``opens_at`` to ``closes_at``, with ``submissions_per_day`` and ``max_queued_per_user`` per
    participant (each, when None, the platform's); the task must load."""
    if opens_at and closes_at and closes_at <= opens_at:
        raise InvalidInput("A track's window must close after it opens.")
    _check_limits(submissions_per_day, max_queued_per_user)
    if not TRACK_NAME.match(name):
        raise InvalidInput(
            f"A track name is 1-64 lowercase letters, digits, '-' or '_', starting with a letter "
            f"or digit; {name!r} is not."
        )
    root = Path(task_dir).resolve()
    taken = name == DEFAULT_TRACK or session.scalar(select(Track.id).where(Track.name == name))
    if taken:
        raise Conflict(f"There is already a track {name!r}.")
    try:
        Task.load(root)
    except InvalidTask as exc:
        # The organiser's folder, not the platform's configured task: theirs to fix.
        raise InvalidInput(exc.message) from exc
    except OSError as exc:  # a folder that may not be read, a name too long for the system
        raise InvalidInput(
            f"Cannot read the task directory {task_dir}: {exc.strerror or exc}."
        ) from exc
    row = Track(
        name=name,
        task_dir=str(root),
        opens_at=opens_at,
        closes_at=closes_at,
        submissions_per_day=submissions_per_day,
        max_queued_per_user=max_queued_per_user,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        # Another organiser took the name between the check above and this insert.
        raise Conflict(f"There is already a track {name!r}.") from exc
    return _info(settings, row)


def _check_limits(*limits: int | None) -> None:
    for limit in limits:
        if limit is not None and not 1 <= limit <= TRACK_MAX_LIMIT:
            raise InvalidInput(f"A track's limit must be from 1 to {TRACK_MAX_LIMIT}, not {limit}.")


def _own_row(session: Session, settings: Settings, name: str) -> Track:
    """The track's row, to change its settings; written first for a default track without one."""
    get_track(session, settings, name)  # NotFound, naming the tracks
    row = _row(session, name)
    if row is None:  # the default track before its row was ever written
        row = Track(name=DEFAULT_TRACK, task_dir=None)
        session.add(row)
    return row


def set_track_limits(
    session: Session,
    settings: Settings,
    name: str,
    *,
    submissions_per_day: int | None,
    max_queued_per_user: int | None,
) -> TrackInfo:
    """Give the track ``name`` its own limits per participant (None: the platform's again)."""
    _check_limits(submissions_per_day, max_queued_per_user)
    row = _own_row(session, settings, name)
    row.submissions_per_day = submissions_per_day
    row.max_queued_per_user = max_queued_per_user
    session.flush()
    return _info(settings, row)


# The tracks table's webhook_url column.
WEBHOOK_MAX_CHARS = 1024


def set_track_webhook(
    session: Session, settings: Settings, name: str, *, url: str | None
) -> TrackInfo:
    """Send the track ``name``'s notifications to ``url`` (http or https); None: to nobody."""
    if url is not None:
        _check_webhook(url)
    row = _own_row(session, settings, name)
    row.webhook_url = url
    session.flush()
    return _info(settings, row)


def _check_webhook(url: str) -> None:
    # The URL is a secret: a refusal never repeats it.
    if len(url) > WEBHOOK_MAX_CHARS:
        raise InvalidInput(f"A webhook URL is at most {WEBHOOK_MAX_CHARS} characters.")
    if any(c.isspace() for c in url) or not _http_with_host(url):
        raise InvalidInput("A webhook URL must be an http:// or https:// URL with a host.")


def _http_with_host(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed port or IPv6 address
        return False
