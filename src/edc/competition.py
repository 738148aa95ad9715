"""The competition window: when participants may upload.

Outside ``[competition_start, competition_end)`` uploads are refused with a sentence saying when
the window opens or that it has closed. Admins are not bound by it (they may rerun, and upload
baselines, at any time).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edc.config import Settings
from edc.errors import CompetitionClosed
from edc.models import utcnow


@dataclass(frozen=True)
class Window:
    start: datetime | None
    end: datetime | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Window:
        return cls(settings.competition_start, settings.competition_end)

    def has_started(self, now: datetime) -> bool:
        return self.start is None or now >= self.start

    def has_ended(self, now: datetime) -> bool:
        return self.end is not None and now >= self.end

    def is_open(self, now: datetime) -> bool:
        return self.has_started(now) and not self.has_ended(now)

    def describe(self, now: datetime) -> str:
        """One sentence for the pages: open until when, opens when, or closed since when."""
        if not self.has_started(now):
            assert self.start is not None
            return f"The competition opens at {_utc(self.start)}."
        if self.has_ended(now):
            assert self.end is not None
            return f"The competition closed at {_utc(self.end)}."
        if self.end is not None:
            return f"The competition is open until {_utc(self.end)}."
        return "The competition is open."


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def check_uploads_open(settings: Settings, *, now: datetime | None = None) -> None:
    """Raise CompetitionClosed outside the window."""
    window = Window.from_settings(settings)
    now = now or utcnow()
    if not window.has_started(now):
        assert window.start is not None
        raise CompetitionClosed(
            f"The competition has not started: uploads open at {_utc(window.start)}."
        )
    if window.has_ended(now):
        assert window.end is not None
        raise CompetitionClosed(f"The competition is over: uploads closed at {_utc(window.end)}.")
