"""Submission rows written straight to the database, for tests of what happens to them next."""

from __future__ import annotations

from edc import db
from edc.config import Settings
from edc.models import Submission


def insert_submission(settings: Settings, **values: object) -> int:
    with db.session_scope(settings) as session:
        row = Submission(
            file_path="uploads/x.zip", sha256="0" * 64, size_bytes=1, original_filename="x.zip"
        )
        for key, value in values.items():
            setattr(row, key, value)
        session.add(row)
        session.flush()
        return row.id


def get_submission(settings: Settings, submission_id: int) -> Submission:
    with db.session_scope(settings) as session:
        row = session.get(Submission, submission_id)
        assert row is not None
        return row
