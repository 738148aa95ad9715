"""A track's webhook: told of a new rank 1 on its provisional board and of its final leaderboard
published, in one JSON body that Slack (``text``) and Discord (``content``) both post.

::

    announce_leader(settings, submission_id)   # after a result is stored
    announce_final(settings, final_id)         # after a final completes

Delivery is an RQ job on a queue of its own (:mod:`edc.scheduler.notify_queue`) that every
worker serves ahead of evaluations, not a thread in the process that saw the event: that process
is an RQ work-horse, which leaves by ``os._exit`` as soon as its job returns and would kill a
thread mid-send (and waiting for the thread would hold the worker). Enqueueing is one Redis
write; the job then makes :data:`TRIES` tries, :data:`TIMEOUT_S` each, :data:`BACKOFF_S` apart,
and a delivery that still fails is logged at WARNING and dropped. Logs name the URL's host
only: Slack's and Discord's webhook URLs are the key to the channel.

Each event is sent once. A rank 1 is claimed with a conditional UPDATE of the track's
``announced_leader`` (``WHERE announced_leader IS DISTINCT FROM`` the new one), made while the
track's row is locked, so neither a recomputed board nor two workers finishing at once announce
one leader twice, and a worker with a stale board cannot announce over a newer leader. A final is
announced by the worker whose conditional UPDATE moved it to ``completed``, which happens once.

Neither entry point raises: a notification is never worth a submission's or a final's result.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from sqlalchemy import select, update

from edc import db
from edc.config import Settings, get_settings
from edc.models import DEFAULT_TRACK, Final, Submission, Track
from edc.scheduler.notify_queue import enqueue_notification
from edc.services import finals, leaderboard
from edc.services.leaderboard import Entry, Ranking
from edc.services.tracks import get_track
from edc.status import FinalStatus

log = logging.getLogger(__name__)

RANK_ONE = "rank_one"
FINAL_PUBLISHED = "final_published"

TRIES = 3
BACKOFF_S = (1.0, 2.0)  # before the second try, then before each one after
TIMEOUT_S = 5.0  # each try: a webhook answers at once or not at all
# Worth another try: the receiver's own trouble or its rate limit. Any other refusal (a webhook
# deleted, a body it does not take) answers the same the next time.
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def announce_leader(settings: Settings, submission_id: int) -> None:
    """Tell the webhook of the submission's track when its board's rank 1 is new; never raises."""
    try:
        claimed = _claim_leader(settings, submission_id)
        if claimed is not None:
            enqueue_notification(settings, *claimed)
    except Exception:
        log.exception("submission %s: the rank-1 notification was not sent", submission_id)


def announce_final(settings: Settings, final_id: int) -> None:
    """Tell the webhook of the final's track that its final leaderboard is published (call once,
    after the final completed); never raises."""
    try:
        message = _final_message(settings, final_id)
        if message is not None:
            enqueue_notification(settings, *message)
    except Exception:
        log.exception("final %s: the notification of its publication was not sent", final_id)


def _claim_leader(settings: Settings, submission_id: int) -> tuple[str, dict[str, Any]] | None:
    """(track, message) when this call claimed a new rank 1 for announcement, else None."""
    with db.session_scope(settings) as session:
        name = session.scalar(select(Submission.track).where(Submission.id == submission_id))
        if name is None:
            return None
        # Locked first, the board read after: whoever locks next sees this result too.
        row = session.scalar(select(Track).where(Track.name == name).with_for_update())
        if row is None or row.webhook_url is None:
            return None  # no webhook, no board to compute
        ranking = get_track(session, settings, name).ranking()
        entries = leaderboard.compute(session, ranking).entries
        # A rank 1 faster than the task's physical floor waits for an organiser's review.
        if not entries or entries[0].flagged:
            return None
        leader = entries[0]
        claimed = session.execute(
            update(Track)
            .where(
                Track.id == row.id, Track.announced_leader.is_distinct_from(leader.submission_id)
            )
            .values(announced_leader=leader.submission_id)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if claimed != 1:
            return None
    return name, rank_one_message(settings, ranking, leader)


def _final_message(settings: Settings, final_id: int) -> tuple[str, dict[str, Any]] | None:
    with db.session_scope(settings) as session:
        final = session.get(Final, final_id)
        if final is None or final.status is not FinalStatus.COMPLETED:
            return None
        name = final.track or DEFAULT_TRACK
        if session.scalar(select(Track.webhook_url).where(Track.name == name)) is None:
            return None
        board = finals.board(session, final)
        winner = board.ranked[0].entry if board.ranked else None
        return name, final_message(settings, board.ranking, winner, ranked=len(board.ranked))


# --- the message ---


def rank_one_message(settings: Settings, ranking: Ranking, leader: Entry) -> dict[str, Any]:
    return _message(
        settings,
        event=RANK_ONE,
        ranking=ranking,
        participant=leader.participant,
        score=leader.score,
        template=(
            f"New rank 1 on track {{track}}: {{participant}}, {{metric}} {leader.score:.4g} "
            f"({ranking.direction} is better)."
        ),
    )


def final_message(
    settings: Settings, ranking: Ranking, winner: Entry | None, *, ranked: int
) -> dict[str, Any]:
    published = "The final leaderboard of track {track} is published"
    return _message(
        settings,
        event=FINAL_PUBLISHED,
        ranking=ranking,
        participant=winner.participant if winner else None,
        score=winner.score if winner else None,
        template=(
            f"{published}: no entry was ranked."
            if winner is None
            else f"{published}: rank 1 of {ranked} is {{participant}}, {{metric}} "
            f"{winner.score:.4g} ({ranking.direction} is better)."
        ),
    )


def _message(
    settings: Settings,
    *,
    event: str,
    ranking: Ranking,
    participant: str | None,
    score: float | None,
    template: str,
) -> dict[str, Any]:
    """The body. The names in ``template`` ({track}, {participant}, {metric}) are escaped for
    each reader, so a participant's name can neither format the text nor mention anyone."""
    link = board_link(settings, ranking.track)
    names = {"track": ranking.track, "participant": participant or "", "metric": ranking.metric}
    tail = f" {link}" if link else ""
    return {
        "text": template.format(**{k: _slack(v) for k, v in names.items()}) + tail,
        "content": template.format(**{k: _discord(v) for k, v in names.items()}) + tail,
        "allowed_mentions": {"parse": []},  # Discord: ping nobody, whatever the text holds
        "event": event,
        "track": ranking.track,
        "participant": participant,
        "score": score,
        "metric": ranking.metric,
        "direction": ranking.direction,
        "link": link,
    }


def board_link(settings: Settings, track: str) -> str | None:
    """The track's leaderboard page, where the portal's address is configured (its public one,
    else the workers')."""
    base = settings.public_url or settings.portal_url
    if not base:
        return None
    query = "" if track == DEFAULT_TRACK else "?" + urlencode({"track": track})
    return f"{base.rstrip('/')}/leaderboard{query}"


def _slack(name: str) -> str:
    # Slack's mrkdwn reads these three as markup (links, mentions such as <!channel>).
    return name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _discord(name: str) -> str:
    return "".join("\\" + c if c in "\\*_~`|>#-[]()" else c for c in name)


# --- the delivery ---


def deliver(track: str, message: dict[str, Any]) -> None:
    """RQ job: post ``message`` to the track's webhook as it is now (switched off since: to
    nobody). Never raises: a failure is logged, the job ends."""
    settings = get_settings()
    with db.session_scope(settings) as session:
        url = session.scalar(select(Track.webhook_url).where(Track.name == track))
    if url is None:
        log.info("track %s: no webhook any more; %s not sent", track, message.get("event"))
        return
    post(url, message, what=f"track {track}: {message.get('event')}")


def post(url: str, message: dict[str, Any], *, what: str) -> bool:
    """Post ``message`` to ``url``, retrying a failure that may pass; True once it was taken."""
    host = webhook_host(url)
    why = "not tried"
    with httpx.Client(timeout=TIMEOUT_S) as client:
        for attempt in range(1, TRIES + 1):
            if attempt > 1:
                log.info("webhook at %s: try %d of %d failed (%s)", host, attempt - 1, TRIES, why)
                time.sleep(BACKOFF_S[min(attempt - 2, len(BACKOFF_S) - 1)])
            try:
                response = client.post(url, json=message)
            except httpx.HTTPError as exc:
                # The class only: some httpx messages repeat the URL, and the URL is the secret.
                why, again = type(exc).__name__, True
            else:
                if response.is_success:
                    log.info("webhook at %s took %s (try %d)", host, what, attempt)
                    return True
                why = f"HTTP {response.status_code}"
                again = response.status_code in RETRIED_STATUSES
            if not again:
                break
    log.warning("webhook at %s did not take %s (%s); the message is dropped", host, what, why)
    return False


def webhook_host(url: str) -> str:
    """What logs may say of a webhook URL: its host (the path and query hold the secret)."""
    try:
        return urlsplit(url).hostname or "an unreadable address"
    except ValueError:
        return "an unreadable address"
