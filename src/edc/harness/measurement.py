"""The measurement version: which way of measuring and scoring a result came from.

Bumped only when what is measured or how it is scored changes (a new timing rule, another ranked
figure's formula, a verification change that could turn a pass into a fail), never with the
package's version: a result measured under another version is not comparable with today's, and
the leaderboard keeps it off until it is measured again (``edc.services.rescore``).
"""

from __future__ import annotations

MEASUREMENT_VERSION = 1


def result_version(task_content_sha256: str) -> str:
    """What a result is comparable by: the measurement version and the task's content hash."""
    return f"m{MEASUREMENT_VERSION}:{task_content_sha256[:16]}"
