"""What a participant may read of a failure on the hidden prompts: harness-known facts only.

A failure's full sentence may quote what the submission sent (an id, its error message, a bad
line); on the hidden prompts that text is the submission's to choose, so a submission could carry
every prompt it was shown out through it. The participant gets the reason and facts the harness
itself decided (how many requests finished, which request and position went wrong); organisers
get the full sentence in the admin-only logs.
"""

from __future__ import annotations

from edc.errors import RunFailed
from edc.status import FailureReason

GENERIC_SENTENCES: dict[FailureReason, str] = {
    FailureReason.INVALID_ARCHIVE: "The submission's archive or entry point is not usable",
    FailureReason.LOAD_TIMEOUT: "The submission did not answer load with ready in time",
    FailureReason.RUN_TIMEOUT: "The submission did not finish its requests within the limits",
    FailureReason.WRONG_OUTPUT: "The submission returned a token outside the tolerance",
    FailureReason.CRASHED: "The submission crashed or stopped with an error",
    FailureReason.MEMORY_LIMIT: "The submission exceeded its memory limit",
    FailureReason.PROTOCOL_ERROR: "The submission broke the decode protocol",
    FailureReason.INFRASTRUCTURE: "The platform failed during the evaluation",
}


def disclose_progress(failure: RunFailed, *, done: int, total: int) -> None:
    """Give ``failure`` a public sentence from its reason and the requests finished, unless the
    harness already wrote a more precise one."""
    if failure.public_message is None:
        failure.public_message = (
            f"{GENERIC_SENTENCES[failure.reason]} ({done} of {total} requests finished)."
        )


def public_sentence(failure: RunFailed) -> str:
    """The sentence a participant may read of a failure on the hidden prompts."""
    return failure.public_message or f"{GENERIC_SENTENCES[failure.reason]}."
