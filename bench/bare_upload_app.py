"""The yardstick for intake: a plain FastAPI app that takes an `UploadFile` and writes it to a file
in 1 MiB chunks, with no checks, no database and no queue (run by bench/intake.py under one
uvicorn process, as `edc portal` runs)."""

from __future__ import annotations

import os
import tempfile
import uuid

from fastapi import FastAPI, UploadFile

app = FastAPI()
DIRECTORY = os.environ.get("BARE_UPLOAD_DIR", tempfile.gettempdir())
CHUNK = 1024 * 1024


@app.post("/upload", status_code=201)
async def upload(file: UploadFile) -> dict[str, int]:
    size = 0
    with open(os.path.join(DIRECTORY, uuid.uuid4().hex), "wb") as out:
        while chunk := await file.read(CHUNK):
            out.write(chunk)
            size += len(chunk)
    return {"size": size}
