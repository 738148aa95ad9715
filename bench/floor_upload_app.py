"""The plain upload app (bench/bare_upload_app.py) made durable, with none of the portal's checks:
the file hashed (sha256) as it is written, synced and renamed into place, one row inserted (one
round trip, autocommit), and its id pushed onto a Redis list. No authentication, no limits, no
archive check, no ORM.

bench/intake.py runs it under one uvicorn process, as it runs the plain app, so the gap between
the two is what durability alone costs. It is not a strict floor: like the plain app it takes
the body through ``UploadFile``, which spools it to a temporary file first, where the portal
streams it straight to its file.
Settings from the environment: FLOOR_UPLOAD_DIR, FLOOR_DATABASE_URL (a libpq URL), FLOOR_REDIS_URL.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import redis
from fastapi import FastAPI, UploadFile
from starlette.concurrency import run_in_threadpool

DIRECTORY = os.environ.get("FLOOR_UPLOAD_DIR", tempfile.gettempdir())
DATABASE_URL = os.environ.get("FLOOR_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
QUEUE = redis.Redis.from_url(os.environ.get("FLOOR_REDIS_URL", "redis://127.0.0.1:6379/0"))
CHUNK = 1024 * 1024
# One connection per thread of the pool the route's blocking work runs on.
_local = threading.local()


def _connection() -> psycopg.Connection:
    connection: psycopg.Connection | None = getattr(_local, "connection", None)
    if connection is None:
        connection = _local.connection = psycopg.connect(DATABASE_URL, autocommit=True)
    return connection


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    with psycopg.connect(DATABASE_URL, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS floor_uploads "
            "(id bigserial PRIMARY KEY, path text NOT NULL, sha256 text NOT NULL, size bigint)"
        )
    yield


app = FastAPI(lifespan=lifespan)


def _keep(part: str, final: str, sha256: str, size: int) -> int:
    os.replace(part, final)
    folder = os.open(DIRECTORY, os.O_RDONLY | os.O_DIRECTORY)  # the rename on disk, as the portal
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    row = _connection().execute(
        "INSERT INTO floor_uploads (path, sha256, size) VALUES (%s, %s, %s) RETURNING id",
        (final, sha256, size),
    )
    found = row.fetchone()
    assert found is not None
    QUEUE.rpush("floor-uploads", found[0])
    return int(found[0])


@app.post("/upload", status_code=201)
async def upload(file: UploadFile) -> dict[str, int]:
    final = os.path.join(DIRECTORY, uuid.uuid4().hex)
    part = f"{final}.part"
    digest = hashlib.sha256()
    size = 0
    with open(part, "wb") as out:
        while chunk := await file.read(CHUNK):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        out.flush()
        await run_in_threadpool(os.fsync, out.fileno())
    row_id = await run_in_threadpool(_keep, part, final, digest.hexdigest(), size)
    return {"id": row_id, "size": size}
