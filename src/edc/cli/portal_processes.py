"""`edc portal --processes N`: N processes serving one port, under uvicorn's supervisor.

Each process builds the app itself (:func:`create_app`, by import string), with the portal's
logging, and ends when the supervisor ends, even by SIGKILL, instead of serving on orphaned. Their
request metrics are counted together in a folder made for the run (Prometheus' multiprocess mode);
a supervisor killed outright cannot remove its folder, so each start removes those whose
supervisor is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from edc.config import get_settings
from edc.lifetime import die_with_parent
from edc.observability.prometheus import MULTIPROCESS_ENV

SINGLE_FACTORY = "edc.portal.app:create_app"
MULTI_FACTORY = "edc.cli.portal_processes:create_app"
FOLDER_PREFIX = "edc-portal-metrics-"
_FOLDER_OWNER = re.compile(rf"^{FOLDER_PREFIX}(\d+)-")


def serve(processes: int, **options: Any) -> int:
    """Serve the portal on ``processes`` processes with uvicorn's ``options`` until stopped; the
    exit status, 3 when a process could not start (as uvicorn's own for one process)."""
    if processes == 1:
        uvicorn.run(SINGLE_FACTORY, factory=True, **options)
        return 0
    remove_abandoned_folders()
    folder = tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-")
    os.environ[MULTIPROCESS_ENV] = folder  # inherited by the processes uvicorn spawns
    try:
        config = uvicorn.Config(MULTI_FACTORY, factory=True, workers=processes, **options)
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the supervisor stops them all
            supervisor.run()
        failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
        return STARTUP_FAILURE if failed else 0
    finally:
        del os.environ[MULTIPROCESS_ENV]
        shutil.rmtree(folder, ignore_errors=True)


def remove_abandoned_folders() -> None:
    """Remove the metrics folders of supervisors no longer running on this host."""
    for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
        owner = _FOLDER_OWNER.match(folder.name)
        if owner is None:
            continue
        try:
            os.kill(int(owner.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # another user's process: running


def create_app() -> FastAPI:
    """The portal as one of several processes builds it."""
    from edc.observability.logging import configure_logging
    from edc.portal.app import create_app as create_portal

    die_with_parent(signal.SIGTERM)
    # Made again if something removed it: without it the metrics could not be counted, and this
    # process would fail at every restart.
    os.makedirs(os.environ[MULTIPROCESS_ENV], exist_ok=True)
    settings = get_settings()
    configure_logging(json=settings.log_format == "json")
    return create_portal(settings)
