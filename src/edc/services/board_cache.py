"""The leaderboard, computed once per change of the results it is made of.

Every page, API call and export asks for the board; at 100k submissions computing it costs tens of
milliseconds. It changes only when a finished result does (or a participant's name), which the
database's change counter (``edc.changes``) tells in one primary-key lookup. So each process keeps
the last board per ranking and recomputes only when the counter moved; one request computes while
the others asking for the same board wait for it rather than compute it again.

A large board (``LARGE_BOARD_ENTRIES`` entries or more: 60 ms to compute at 1,000 participants and
100k submissions) is computed again in the background instead, while readers get the last one at
once, at most one computation behind (its ``generated_at`` says when it was made). Small boards,
computed in milliseconds, are always current.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from edc import changes
from edc.background import BackgroundRuns
from edc.services.leaderboard import Leaderboard, Ranking, compute

LARGE_BOARD_ENTRIES = 200

log = logging.getLogger(__name__)

_lock = threading.Lock()
# Large boards' computations, one per (database, ranking) at a time.
_recomputations = BackgroundRuns("edc-board")
# (database, ranking) -> (the counter's value it was computed at, the board)
_boards: dict[tuple[str, Ranking], tuple[int, Leaderboard]] = {}
# (database, ranking) -> (a board, its rendering: the API's JSON)
_renderings: dict[tuple[str, Ranking], tuple[Leaderboard, bytes]] = {}


def current(session: Session, ranking: Ranking) -> Leaderboard:
    """The board of ``ranking`` as the database stands now."""
    key = _key(session, ranking)
    version = changes.counter(session)
    if version is None:  # nothing finished since the counters began: cheap, and not cached
        return compute(session, ranking)
    cached = _boards.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    if cached is not None and len(cached[1].entries) >= LARGE_BOARD_ENTRIES:
        engine = session.get_bind().engine
        _recomputations.start(key, functools.partial(_recompute, engine, key, ranking))
        return _boards[key][1]
    with _lock:
        cached = _boards.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]  # computed while this request waited
        board = compute(session, ranking)
        _boards[key] = (version, board)
        return board


def _recompute(engine: Engine, key: tuple[str, Ranking], ranking: Ranking) -> None:
    try:
        with Session(engine) as session:
            # The counter first: a change during the computation moves it again, and the next
            # reader starts another.
            version = changes.counter(session)
            board = compute(session, ranking)
    except Exception:
        log.exception("the leaderboard of %s was not computed again", ranking.track)
        return
    if version is not None:
        # One computation at a time per board: this one read the latest counter when it began.
        _boards[key] = (version, board)


def rendered(session: Session, ranking: Ranking, render: Callable[[Leaderboard], bytes]) -> bytes:
    """``render(board)`` of the current board, rendered once per board (a thousand entries take
    longer to serialise than the cached board takes to find)."""
    board = current(session, ranking)
    key = _key(session, ranking)
    cached = _renderings.get(key)
    if cached is not None and cached[0] is board:
        return cached[1]
    body = render(board)
    _renderings[key] = (board, body)
    return body


def _key(session: Session, ranking: Ranking) -> tuple[str, Ranking]:
    return (str(session.get_bind().engine.url), ranking)
