"""The states a row can be in, and why a submission failed: the vocabulary every layer speaks.

Kept apart from the tables (:mod:`edc.models`) so that code which only names a state (errors, the
harness, the pages) does not import the ORM.
"""

from __future__ import annotations

import enum


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


class FinalStatus(enum.StrEnum):
    """Where a final ranking is in its life.

    ``queued`` → ``running`` → ``completed`` | ``failed``. One RQ job runs the whole final; only
    the worker that moved it from ``queued`` to ``running`` writes its measurements.
    """

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class MeasurementStatus(enum.StrEnum):
    """One re-measurement in a final: ``pending``, then ``completed`` or ``failed``."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
