"""The worker's proof of life for the submission it evaluates.

While a run lasts, a thread refreshes ``heartbeat_at`` on the row. When the worker dies (SIGKILL,
a lost host) the heartbeat goes stale and the reconciler hands the submission to another worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from sqlalchemy import update

from edc import db
from edc.config import Settings
from edc.models import Submission, running_attempt, utcnow

log = logging.getLogger(__name__)


def beat(settings: Settings, submission_id: int, attempt: int) -> bool:
    """One heartbeat; False when the row is no longer ours (cancelled, or handed to another)."""
    with db.session_scope(settings) as session:
        result = session.execute(
            update(Submission)
            .where(running_attempt(submission_id, attempt))
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


class Heartbeat:
    """``with Heartbeat(...):`` beats every ``heartbeat_interval_s`` until the block ends.

    When a beat finds the row no longer ours (cancelled, or handed to another worker), it calls
    ``on_lost`` once and stops beating.
    """

    def __init__(
        self,
        settings: Settings,
        submission_id: int,
        attempt: int,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.submission_id = submission_id
        self.attempt = attempt
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edc-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_interval_s):
            try:
                still_ours = beat(self.settings, self.submission_id, self.attempt)
            except Exception as exc:  # a database hiccup must not end the run; retry next beat
                log.warning("heartbeat for submission %s failed: %s", self.submission_id, exc)
                continue
            if not still_ours:
                log.info("submission %s is no longer ours; stopping its run", self.submission_id)
                if self.on_lost is not None:
                    self.on_lost()
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
