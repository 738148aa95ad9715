"""Versioned results: a result records the version it is comparable by (the measurement version
and the task's content hash); when the task changes, its results go stale (off the board, kept
for their owners) and `rescore` measures the best of them again, at low priority, counted against
no limit, never touching a published final. End to end with a real worker and sandbox."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from edc import db
from edc.cli.main import app as edc_app
from edc.config import Settings, get_settings
from edc.harness.measurement import MEASUREMENT_VERSION, result_version
from edc.models import Submission
from edc.portal import presentation
from edc.scheduler import fair_worker
from edc.services import finals, rescore, rules
from edc.status import SubmissionStatus
from edc.tasks.task import bundled_task_dir, bytes_content_hash_of, content_hash_of
from tests.support.competition import add_submission, bearer, metrics
from tests.support.databases import postgres_only
from tests.support.live_server import LiveServer, People
from tests.support.platform import kvcache_zip, quick_task


@pytest.fixture
def worker_settings(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # Its own task.toml and prompts (the quick task links the package's), so the test may
    # change the task.
    task = quick_task(tmp_path_factory.mktemp("versioned") / "task")
    (task / "prompts").unlink()
    shutil.copytree(bundled_task_dir() / "prompts", task / "prompts")
    return live_server.settings.model_copy(update={"task_dir": task, "max_attempts": 1})


def _upload(server: LiveServer, token: str) -> int:
    sent = httpx.post(
        f"{server.url}/api/v1/submissions",
        headers=bearer(token),
        files={"file": ("kv.zip", kvcache_zip(), "application/zip")},
        timeout=30,
    )
    assert sent.status_code == 201, sent.text
    return int(sent.json()["id"])


def _work(settings: Settings) -> None:
    assert fair_worker.make_worker(settings, name="w-cpu", hardware_class="cpu").work(burst=True)


def _row(settings: Settings, submission_id: int) -> Submission:
    with db.session_scope(settings) as session:
        row = session.get(Submission, submission_id)
        assert row is not None
        session.expunge(row)
        return row


@pytest.mark.usefixtures("worker_environment")
@postgres_only
def test_a_changed_task_makes_results_stale_and_rescore_measures_them_again(
    live_server: LiveServer, worker_settings: Settings, people: People
) -> None:
    s = worker_settings
    task_dir = s.task_dir
    assert task_dir is not None
    first = _upload(live_server, people.alice[1])
    _work(s)
    row = _row(s, first)
    assert row.status is SubmissionStatus.COMPLETED and row.result_metrics is not None
    current = result_version(content_hash_of(task_dir))
    assert row.result_metrics["result_version"] == current
    assert row.result_metrics["provenance"]["harness"]["measurement"] == MEASUREMENT_VERSION
    score = row.result_metrics["score"]

    # A published final of the board as it stands.
    finals.finalize(s, top_k=1, rounds=1, requested_by="test")
    _work(s)
    with db.session_scope(s) as session:
        published = finals.latest_board(session)
    assert published is not None and [e.submission_id for e in published.ranked] == [first]

    # The organisers change the task and bump its version: the result is of another version
    # now, off the board. The bump alone would do it (the content hash covers task.toml).
    toml = task_dir / "task.toml"
    assert 'version = "1"' in toml.read_text()
    # A comment or a blank line is no change of the task: its results stay current.
    toml.write_text("# the organisers' note\n\n" + toml.read_text())
    assert result_version(content_hash_of(task_dir)) == current
    toml.write_text(toml.read_text().replace('version = "1"', 'version = "2"'))
    bumped = result_version(content_hash_of(task_dir))
    assert bumped != current
    toml.write_text(toml.read_text().replace("timed = 2", "timed = 3"))
    assert result_version(content_hash_of(task_dir)) not in (current, bumped)
    (counts,) = rescore.rescore_configured(s)
    assert counts.outdated == 1
    board = httpx.get(f"{live_server.url}/api/v1/leaderboard").json()
    assert board["entries"] == []
    stale = _row(s, first)
    assert stale.status is SubmissionStatus.COMPLETED and stale.score is None
    assert stale.result_metrics is not None and stale.result_metrics["stale_version"] == current
    # Its owner still sees it, told why.
    mine = httpx.get(
        f"{live_server.url}/api/v1/submissions/{first}", headers=bearer(people.alice[1])
    )
    assert mine.status_code == 200 and mine.json()["result_metrics"]["stale"] is True
    told = presentation.result_notices(stale.result_metrics, stale.review)
    assert any("another version of the task" in notice.text for notice in told)

    # rescore queues the best stale entry's re-measurement: it counts against no limit.
    with db.session_scope(s) as session:
        before = rules.usage(
            session, rules.Limits.from_settings(s), user_id=people.alice[0], now=stale.created_at
        )
    assert rescore.remeasure_stale(s, None, top_k=5) == [first]
    with db.session_scope(s) as session:
        during = rules.usage(
            session, rules.Limits.from_settings(s), user_id=people.alice[0], now=stale.created_at
        )
    assert during == before
    # A participant's new upload waits in its own queue and goes first.
    second = _upload(live_server, people.bob[1])
    _work(s)
    fresh, newer = _row(s, first), _row(s, second)
    assert fresh.score is not None and fresh.result_metrics is not None
    assert fresh.result_metrics["result_version"] == result_version(content_hash_of(task_dir))
    assert fresh.result_metrics["remeasured_from"]["stale_version"] == current
    assert newer.finished_at is not None and fresh.finished_at is not None
    assert newer.finished_at < fresh.finished_at
    board = httpx.get(f"{live_server.url}/api/v1/leaderboard").json()
    assert sorted(e["submission_id"] for e in board["entries"]) == sorted([first, second])

    # The published final is as it was.
    with db.session_scope(s) as session:
        again = finals.latest_board(session)
    assert again is not None and again.final.id == published.final.id
    assert again.ranked == published.ranked
    assert score is not None


def test_rescore_command_names_each_track(worker_settings: Settings, tmp_path: Path) -> None:
    env = {
        "EDC_DATA_DIR": str(worker_settings.data_dir),
        "EDC_DATABASE_URL": worker_settings.resolved_database_url,
        "EDC_REDIS_URL": worker_settings.redis_url,
        "EDC_TASK_DIR": str(worker_settings.task_dir),
        "EDC_CLI_CONFIG_DIR": str(tmp_path / "cli"),
    }
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(edc_app, ["admin", "rescore", "--track", "default"], env=env)
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 0, done.output
    assert "track default, ranked by" in done.output
    assert "stale (another result version): 0" in done.output
    assert "re-measurements queued (0): none" in done.output


def test_a_result_stamped_by_an_earlier_release_stays_current(
    live_server: LiveServer, worker_settings: Settings, people: People
) -> None:
    # Earlier releases hashed task.toml's bytes; this one hashes its values. A result stamped
    # with the old spelling of the task it is still of is given the new spelling, not made stale.
    s = worker_settings
    task_dir = s.task_dir
    assert task_dir is not None
    earlier = result_version(bytes_content_hash_of(task_dir))
    current = result_version(content_hash_of(task_dir))
    assert earlier != current
    kept = add_submission(
        s, people.alice[0], result_metrics={**metrics(2.0), "result_version": earlier}
    )
    other = add_submission(
        s, people.bob[0], result_metrics={**metrics(1.0), "result_version": "m1:0000"}
    )
    (counts,) = rescore.rescore_configured(s)
    assert counts.outdated == 1
    kept_metrics, other_metrics = _row(s, kept).result_metrics, _row(s, other).result_metrics
    assert kept_metrics is not None and other_metrics is not None
    assert kept_metrics["result_version"] == current and kept_metrics["score"] == 2.0
    assert other_metrics["stale"] is True and other_metrics["score"] is None
    # From now on a comment edited into task.toml changes nothing.
    toml = task_dir / "task.toml"
    toml.write_text(toml.read_text() + "\n# edited\n")
    (counts,) = rescore.rescore_configured(s)
    assert counts.outdated == 0
    assert _row(s, kept).result_metrics == kept_metrics
