"""The worker's proof of life for the submission it evaluates (or the final it measures).

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
    """``with Heartbeat(settings, beat, what=...):`` calls ``beat`` every
    ``heartbeat_interval_s`` until the block ends (a submission's row, a final's).

    When a beat returns False (the row is no longer ours: cancelled, or handed to another worker),
    it calls ``on_lost`` once and stops beating. A beat that raises (a database hiccup) is only
    logged: the next one may get through.
    """

    def __init__(
        self,
        settings: Settings,
        beat: Callable[[], bool],
        *,
        what: str,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.beat = beat
        self.what = what
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edc-heartbeat", daemon=True)

    @classmethod
    def for_submission(
        cls,
        settings: Settings,
        submission_id: int,
        attempt: int,
        on_lost: Callable[[], None] | None = None,
    ) -> Heartbeat:
        return cls(
            settings,
            lambda: beat(settings, submission_id, attempt),
            what=f"submission {submission_id}",
            on_lost=on_lost,
        )

    def _run(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_interval_s):
            try:
                still_ours = self.beat()
            except Exception as exc:  # a database hiccup must not end the run; retry next beat
                log.warning("heartbeat for %s failed: %s", self.what, exc)
                continue
            if not still_ours:
                log.info("%s is no longer ours; stopping its run", self.what)
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
