"""A first example submission, so a fresh platform shows a finished result and a leaderboard."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import anyio
from sqlalchemy import exists, select

from edc import db
from edc.config import Settings
from edc.errors import InvalidUpload
from edc.models import Submission
from edc.services import accounts, moderation
from edc.services.submissions import create_submission

log = logging.getLogger(__name__)

EXAMPLE_USER = "example"


def zip_directory(directory: Path) -> bytes:
    """The directory's files as a zip, paths relative to it (as `edc submit` would send)."""
    if not directory.is_dir():
        raise InvalidUpload(f"The example {str(directory)!r} is not a directory.")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


def seed_example(settings: Settings, example_dir: Path) -> int | None:
    """Submit ``example_dir`` as user "example", marked as a baseline, unless the platform
    already holds submissions. Returns the new submission's id, or None when nothing was done."""
    with db.session_scope(settings) as session:
        if session.scalar(select(exists().where(Submission.id.is_not(None)))):
            return None
        user = accounts.user_by_name(session, EXAMPLE_USER) or accounts.create_user(
            session, name=EXAMPLE_USER
        )
        owner_id = user.id
    payload = zip_directory(example_dir)

    async def submit() -> int:
        row = await create_submission(
            settings, owner_id=owner_id, filename=f"{example_dir.name}.zip", chunks=[payload]
        )
        return row.id

    submission_id = anyio.run(submit)
    with db.session_scope(settings) as session:
        moderation.set_baseline(session, submission_id=submission_id, baseline=True)
    log.info("submitted the example %s as submission %d", example_dir, submission_id)
    return submission_id
