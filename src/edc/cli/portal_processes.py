"""`edc portal --processes N`: N processes serving one port, as uvicorn's supervisor runs them.

Each process builds the app itself (:func:`create_app`, by import string), with the portal's
logging, and ends when the supervisor ends, even by SIGKILL, instead of serving on orphaned. Their
request metrics are counted together in a fresh folder for the run (Prometheus' multiprocess mode).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from edc.config import get_settings
from edc.lifetime import die_with_parent
from edc.observability.prometheus import MULTIPROCESS_ENV

SINGLE_FACTORY = "edc.portal.app:create_app"
MULTI_FACTORY = "edc.cli.portal_processes:create_app"


@contextmanager
def serving(processes: int) -> Iterator[str]:
    """The app factory uvicorn is to import for ``processes`` processes; with more than one, the
    metrics folder exists (and the environment names it) while the block runs."""
    if processes == 1:
        yield SINGLE_FACTORY
        return
    folder = tempfile.mkdtemp(prefix="edc-portal-metrics-")
    earlier = os.environ.get(MULTIPROCESS_ENV)
    os.environ[MULTIPROCESS_ENV] = folder  # inherited by the processes uvicorn spawns
    try:
        yield MULTI_FACTORY
    finally:
        if earlier is None:
            os.environ.pop(MULTIPROCESS_ENV, None)
        else:
            os.environ[MULTIPROCESS_ENV] = earlier
        shutil.rmtree(folder, ignore_errors=True)


def create_app() -> FastAPI:
    """The portal as one of several processes builds it."""
    from edc.observability.logging import configure_logging
    from edc.portal.app import create_app as create_portal

    die_with_parent(signal.SIGTERM)
    settings = get_settings()
    configure_logging(json=settings.log_format == "json")
    return create_portal(settings)
