"""The project's own errors. Domain code raises these; only the portal turns them into HTTP.

::

    EdcError                      safe to show the user: ``message`` is a full sentence
    ├── NotFound                  no such submission (or not yours)
    ├── NotAuthenticated          no valid session or API token: log in first
    ├── Forbidden                 logged in, but the action is not yours to take
    ├── RateLimited               over a limit; ``retry_after_s`` says when to try again
    ├── CompetitionClosed         outside the competition window: uploads are refused
    ├── Conflict                  clashes with the current state (a name taken, a final status)
    │   └── FinalPublished        the track's final is published: it is never changed
    ├── InvalidInput              a form field or request value is unusable
    ├── InvalidUpload             the upload is refused; ``code`` says which rule
    │   └── UploadTooLarge        over EDC_MAX_UPLOAD_MB, refused while streaming
    ├── StorageFull               the upload disk is full: nothing was kept
    ├── ServiceUnavailable        the database or the queue does not answer
    ├── SandboxUnavailable        no sandbox backend can run untrusted code here
    ├── InvalidTask               a task directory (task.toml, model, prompts) is unusable
    ├── ArchiveUnavailable        a worker cannot get a verified copy of the archive it runs
    └── RunFailed                 a submission's run ended badly; ``reason`` is a FailureReason
"""

from __future__ import annotations

from edc.status import FailureReason


class EdcError(Exception):
    """Base class: ``message`` is a sentence a participant or operator can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(EdcError):
    pass


class NotAuthenticated(EdcError):
    pass


class Forbidden(EdcError):
    pass


class RateLimited(EdcError):
    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)


class CompetitionClosed(EdcError):
    pass


class Conflict(EdcError):
    pass


class FinalPublished(Conflict):
    """The track already has a completed final: a published final leaderboard never changes, so
    no second final of the track is started."""

    def __init__(self, track: str, final_id: int) -> None:
        super().__init__(
            f"The track {track!r} has a published final leaderboard (final {final_id}); "
            "a published final is never changed."
        )
        self.track = track
        self.final_id = final_id


class InvalidInput(EdcError):
    pass


class InvalidUpload(EdcError):
    def __init__(self, message: str, *, code: str = "invalid_archive") -> None:
        super().__init__(message)
        self.code = code


class UploadTooLarge(InvalidUpload):
    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            f"The upload is larger than the limit of {limit_bytes // (1024 * 1024)} MB.",
            code="too_large",
        )
        self.limit_bytes = limit_bytes


class UploadTooSlow(InvalidUpload):
    """The body did not arrive at the minimum rate: the connection is cut and nothing is kept."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="too_slow")


class StorageFull(EdcError):
    pass


class ServiceUnavailable(EdcError):
    pass


class SandboxUnavailable(EdcError):
    pass


class InvalidTask(EdcError):
    pass


class ArchiveUnavailable(EdcError):
    """The platform's fault, never the participant's: the portal unreachable or refusing, the file
    gone, or bytes that do not match the database's sha256. The executor treats it as an
    infrastructure failure (retried)."""


class RunFailed(EdcError):
    """Raised inside the worker; the executor records ``reason`` and ``message`` on the row.

    ``message`` may quote what the submission sent. ``public_message``, when set, says the same
    with harness-known facts only (reason, request index, position, counts): the hidden stage
    shows the participant that one, so a submission cannot carry hidden prompts out in the text
    of its own failure.
    """

    def __init__(
        self,
        reason: FailureReason,
        message: str,
        *,
        logs: str = "",
        public_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.logs = logs
        self.public_message = public_message
