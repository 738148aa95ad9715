"""Dependencies declared once, used as type annotations in the routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, cast

from fastapi import Depends, Path, Query, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from edc import db
from edc.config import Settings
from edc.db import database_errors


# Plain lookups are coroutines: FastAPI runs a dependency declared with `def` on its thread pool,
# a thread hop per request for one attribute.
async def get_app_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """A unit of work per request: committed when the route returns, rolled back if it raises."""
    with database_errors(), db.session_scope(settings) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_templates(request: Request) -> Jinja2Templates:
    return cast(Jinja2Templates, request.app.state.templates)


TemplatesDep = Annotated[Jinja2Templates, Depends(get_templates)]


# Row ids are 32-bit integer columns (PostgreSQL's `integer`): a larger number names no row, and
# handing it to the database is an error there rather than a miss, so it is refused as invalid.
MAX_ROW_ID = 2**31 - 1

SubmissionId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The submission's id.")]
TokenId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The API token's id.")]
Offset = Annotated[int, Query(ge=0, le=MAX_ROW_ID, description="How many to skip.")]
