"""Routes for the platform's own workers, not for participants.

They need the worker credential (``EDC_WORKER_TOKEN``) as a bearer token and stay out of the API
docs. A portal with no credential configured answers them exactly as it answers a path that does
not exist, so they are not advertised.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse

from edc import storage
from edc.errors import NotAuthenticated, NotFound
from edc.portal.deps import SessionDep, SettingsDep, SubmissionId
from edc.services import submissions

# Lets a worker name the expected bytes in its logs; it checks against its own database read.
SHA256_HEADER = "X-Edc-Sha256"


async def require_worker(request: Request, settings: SettingsDep) -> None:
    expected = settings.worker_token
    if not expected:
        raise HTTPException(status_code=404)  # the same answer as an unknown path
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Compared in constant time, so the answer's timing does not reveal a matching prefix.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        raise NotAuthenticated("This route needs the worker credential (EDC_WORKER_TOKEN).")


router = APIRouter(include_in_schema=False, dependencies=[Depends(require_worker)])


@router.get("/submissions/{submission_id}/archive", response_class=FileResponse)
def submission_archive(
    submission_id: SubmissionId, settings: SettingsDep, session: SessionDep
) -> FileResponse:
    """The stored zip of a submission the database holds, streamed from disk."""
    row = submissions.get_submission(session, submission_id=submission_id)
    path = storage.path_for(settings, row.file_path)
    if not path.is_file():
        raise NotFound(f"The archive of submission {submission_id} is gone.")
    return FileResponse(path, media_type="application/zip", headers={SHA256_HEADER: row.sha256})
