"""Log-ins wait for their turn on the event loop, not in the thread pool.

A password check runs in a worker thread (argon2id is CPU and memory bound). Without a gate, a
flood of guesses from many addresses (a botnet behind the proxy: no address limit applies) would
fill the thread pool with requests waiting for the service's bound on checks, and every other
route that needs a thread would queue behind them. Here at most ``login_concurrency`` log-ins are
admitted to a thread at once; the rest wait on the event loop, cheaply, for at most
``CHECK_WAIT_S``, then get 429.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from edc.services import accounts


class LoginGate:
    def __init__(self, bound: int) -> None:
        self._admitted = asyncio.Semaphore(bound)

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._admitted.acquire(), accounts.CHECK_WAIT_S)
        except TimeoutError:
            raise accounts.checks_busy() from None
        try:
            yield
        finally:
            self._admitted.release()
