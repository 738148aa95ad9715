"""The sandbox a worker runs a track's decoder in: every track's task directory kept out of it.

A backend hides the configured task's directory by itself (``EDC_TASK_DIR``); the other tracks'
live wherever their organiser put them, and only the database knows where.
"""

from __future__ import annotations

from pathlib import Path

from edc import db
from edc.config import Settings
from edc.sandbox.backends import choose_sandbox
from edc.sandbox.base import Sandbox
from edc.sandbox.runtime import DecoderRuntime
from edc.services.tracks import list_tracks


def track_dirs(settings: Settings) -> list[Path]:
    """Every track's task directory (retried while the database does not answer)."""

    def read() -> list[Path]:
        with db.session_scope(settings) as session:
            return [track.task_dir for track in list_tracks(session, settings)]

    return db.retry_while_unreachable(settings, read, what="reading the tracks")


def track_sandbox(settings: Settings, runtime: DecoderRuntime | None) -> Sandbox:
    """The backend for a run offering ``runtime``, with no track's task directory in reach."""
    return choose_sandbox(settings, runtime, private_dirs=track_dirs(settings))
