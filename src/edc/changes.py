"""Change counters: read the number that moves whenever finished results change.

Triggers in the database move it (migration 0006: any insert, update or delete of a completed or
failed submission, a participant renamed or removed), so a cache keyed on it is never stale
whichever process wrote. Reading it is one primary-key lookup.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from edc.models import ChangeCounter

RESULTS = "results"


def counter(session: Session, name: str = RESULTS) -> int | None:
    """The counter's value; None before its first change."""
    return session.scalar(select(ChangeCounter.value).where(ChangeCounter.name == name))
