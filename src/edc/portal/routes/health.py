"""Liveness and readiness, for process supervisors and load balancers."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from edc import db
from edc.db import database_errors
from edc.errors import ServiceUnavailable
from edc.portal.deps import SettingsDep
from edc.scheduler import connection

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive (checks nothing else). On the event loop: it must answer while the
    thread pool is busy, which is when a load balancer most needs the answer."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The database or the queue is down."}})
def readyz(settings: SettingsDep) -> JSONResponse:
    """Ready to take uploads: the database answers SELECT 1 and Redis answers PING."""
    checks = {"database": "ok", "queue": "ok"}
    down: list[str] = []
    try:
        with database_errors(), db.session_scope(settings) as session:
            session.execute(text("SELECT 1"))
    except ServiceUnavailable:
        checks["database"] = "down"
        down.append("the database")
    try:
        connection.ping(settings)
    except ServiceUnavailable:
        checks["queue"] = "down"
        down.append("the job queue (Redis)")
    if down:
        verb = "is" if len(down) == 1 else "are"
        detail = f"Not ready: {' and '.join(down)} {verb} unreachable."
        return JSONResponse({"detail": detail, "code": "not_ready", "checks": checks}, 503)
    return JSONResponse({"status": "ready", "checks": checks})
