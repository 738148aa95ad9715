"""Times as the platform stores and tells them: UTC, always with a zone."""

from __future__ import annotations

from datetime import UTC, datetime


def aware_utc(moment: datetime) -> datetime:
    """SQLite hands back naive times (stored in UTC); PostgreSQL aware ones. Make them alike."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def human_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``: rounded up, so a wait is never understated."""
    whole = max(0, int(-(-seconds // 1)))
    if whole < 90:
        return f"{whole} s"
    minutes = (whole + 59) // 60
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
