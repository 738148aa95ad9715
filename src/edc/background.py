"""Recomputations off the request path: at most one run per key at a time, in a daemon thread.

What the portal shows of the results (a large leaderboard, the metrics' histograms) is kept
until the results change, then computed again here while readers get the last one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable


class BackgroundRuns:
    def __init__(self, name: str) -> None:
        """``name`` names the threads (seen in py-spy and thread dumps)."""
        self._name = name
        self._lock = threading.Lock()
        self._running: dict[Hashable, threading.Thread] = {}

    def start(self, key: Hashable, work: Callable[[], None]) -> threading.Thread:
        """Run ``work`` unless a run for ``key`` is under way; returns the run under way."""
        with self._lock:
            thread = self._running.get(key)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=work, name=self._name, daemon=True)
                self._running[key] = thread
                thread.start()
            return thread
