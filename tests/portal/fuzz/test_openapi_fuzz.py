"""The JSON API fuzzed from its own OpenAPI schema with schemathesis, on SQLite and PostgreSQL.

Requests go in-process to the app that ``create_app`` builds (real database, real Redis), as an
anonymous caller, as a participant with an API token and as an admin. Every operation gets valid
and invalid requests; schemathesis's default checks apply (no 5xx, status codes, content types,
headers and bodies as documented, invalid input refused), plus one of ours: a participant never
receives another participant's private data, whatever the id or parameters.

Path ids are aimed at real rows half of the time (both participants'), so the routes are fuzzed
past their 404 too. Example counts are bounded so the whole module runs in about a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from edc.config import Settings
from edc.portal.app import create_app
from edc.status import FailureReason, SubmissionStatus
from tests.portal.security.conftest import stored_archive
from tests.support.competition import add_submission, bearer, make_user, metrics

# A fuzzing campaign of about a minute: slow, and run in CI like the rest.
pytestmark = pytest.mark.slow

# The schema is the app's own; any settings give the same routes.
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(env="dev")).openapi())
SCHEMA.config.generation.update(modes=["positive", "negative"])

# Private to bob: none of it may reach alice. (Names and scores are public on the leaderboard.)
BOBS_SECRET = "bob-private-7f3a"

FUZZ = settings(
    deadline=None,
    database=None,
    # The app and its rows are set up once per operation, not once per example: that is the point.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class World:
    client: asgi.ASGIClient
    alice: str
    root: str
    # Submissions the fuzzer's path ids are aimed at: alice's and bob's, all in a final state.
    ids: list[int]


def _rows_of(settings: Settings, user_id: int, secret: str) -> list[int]:
    common: dict[str, Any] = {
        "original_filename": f"{secret}.zip",
        "logs": f"hidden-prompt logs {secret}",
        "public_logs": f"public-prompt logs {secret}",
    }
    return [
        add_submission(
            settings,
            user_id,
            result_metrics=metrics(5.0),
            file_path=stored_archive(settings, secret),
            **common,
        ),
        add_submission(
            settings,
            user_id,
            status=SubmissionStatus.FAILED,
            failure_reason=FailureReason.WRONG_OUTPUT,
            failure_message=f"token 3 differs {secret}",
            file_path=stored_archive(settings, secret),
            **common,
        ),
    ]


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    fuzzed = settings.model_copy(
        update={
            "max_upload_mb": 1,
            # The limits have their own tests; here they would only hide the routes behind 429.
            "submissions_per_day": 100_000,
            "max_queued_per_user": 100_000,
        }
    )
    alice_id, alice = make_user(fuzzed, "alice")
    bob_id, _bob = make_user(fuzzed, "bob")
    _root_id, root = make_user(fuzzed, "root", admin=True)
    alices = _rows_of(fuzzed, alice_id, "alice-own-data")
    bobs = _rows_of(fuzzed, bob_id, BOBS_SECRET)
    app = create_app(fuzzed)
    # One event is enough to check a live stream's shape without waiting for its end.
    with asgi.get_client(app, max_stream_events=1) as client:
        yield World(client, alice, root, alices + bobs)
    asgi.shutdown_lifespans()


def _aim_at_real_rows(case: schemathesis.Case, data: st.DataObject, ids: list[int]) -> None:
    """Replace a valid generated id by a seeded row's id, half of the time."""
    params = case.path_parameters
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    if isinstance(params.get("submission_id"), int) and data.draw(st.booleans(), label="aim"):
        params["submission_id"] = data.draw(st.sampled_from(ids), label="row")


def _excluded(case: schemathesis.Case) -> list[Any]:
    # The schema can say "a binary file" but not "a zip with an entry point": a schema-valid
    # upload of random bytes is rightly refused with 400 (the acceptance path has its own tests).
    # Nor "a folder on the portal's host holding a task": a random task_dir is rightly a 400.
    if case.method == "POST" and case.operation.path in (
        "/api/v1/submissions",
        "/api/v1/admin/tracks",
    ):
        return [positive_data_acceptance]
    return []


def nothing_of_bobs(ctx: Any, response: Any, case: schemathesis.Case) -> None:
    """A participant's check: no answer carries another participant's private data."""
    assert BOBS_SECRET.encode() not in response.content, (
        f"{case.method} {case.formatted_path} leaked another participant's data"
    )


@SCHEMA.parametrize()
@SCHEMA.given(data=st.data())
@settings(FUZZ, max_examples=10)
def test_anonymous(case: schemathesis.Case, data: st.DataObject, world: World) -> None:
    _aim_at_real_rows(case, data, world.ids)
    case.call_and_validate(
        session=world.client,
        additional_checks=[nothing_of_bobs],
        excluded_checks=_excluded(case),
    )


@SCHEMA.parametrize()
@SCHEMA.given(data=st.data())
@settings(FUZZ, max_examples=40)
def test_participant(case: schemathesis.Case, data: st.DataObject, world: World) -> None:
    _aim_at_real_rows(case, data, world.ids)
    case.call_and_validate(
        session=world.client,
        headers=bearer(world.alice),
        additional_checks=[nothing_of_bobs],
        excluded_checks=_excluded(case),
    )


@SCHEMA.parametrize()
@SCHEMA.given(data=st.data())
@settings(FUZZ, max_examples=20)
def test_admin(case: schemathesis.Case, data: st.DataObject, world: World) -> None:
    _aim_at_real_rows(case, data, world.ids)
    case.call_and_validate(
        session=world.client, headers=bearer(world.root), excluded_checks=_excluded(case)
    )
