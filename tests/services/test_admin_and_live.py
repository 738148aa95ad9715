"""Admin actions against the real queue, queue positions, workers, exports and live events."""

from __future__ import annotations

import csv
import io
import json
import threading
import time

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import update

from edc import db
from edc.config import Settings
from edc.models import Submission, utcnow
from edc.scheduler.fair_worker import make_worker
from edc.scheduler.producer import job_id_for, queued_job_ids
from edc.status import SubmissionStatus
from edc.worker.heartbeat import beat
from tests.support.competition import add_submission, bearer, metrics, upload
from tests.support.databases import postgres_only
from tests.support.live_server import LiveServer, People


def test_queue_positions_follow_the_order_and_cancel_takes_a_job_off(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    ids = [
        upload(app_client, token).json()["id"]
        for token in (people.alice[1], people.bob[1], people.alice[1])
    ]
    positions = [
        app_client.get(f"/api/v1/submissions/{i}", headers=bearer(people.root[1])).json()[
            "queue_position"
        ]
        for i in ids
    ]
    assert positions == [1, 2, 3]
    queue = app_client.get("/api/v1/admin/queue", headers=bearer(people.root[1])).json()
    assert queue["length"] == 3
    assert [(q["position"], q["id"], q["owner"]) for q in queue["items"]] == [
        (1, ids[0], "alice"),
        (2, ids[1], "bob"),
        (3, ids[2], "alice"),
    ]
    # Alice cancels her first: it leaves the RQ queue, and everyone behind moves up.
    cancelled = app_client.post(
        f"/api/v1/submissions/{ids[0]}/cancel", headers=bearer(people.alice[1])
    )
    assert cancelled.json()["status"] == "cancelled"
    assert "Cancelled by its owner (alice)" in cancelled.json()["failure_message"]
    assert sorted(queued_job_ids(rules)) == sorted([job_id_for(ids[1], 1), job_id_for(ids[2], 1)])
    again = app_client.get(f"/api/v1/submissions/{ids[2]}", headers=bearer(people.alice[1])).json()
    assert again["queue_position"] == 2
    conflict = app_client.post(
        f"/api/v1/submissions/{ids[0]}/cancel", headers=bearer(people.alice[1])
    )
    assert conflict.status_code == 409


def test_cancelling_a_running_submission_is_seen_by_its_heartbeat(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    running = add_submission(
        rules, people.alice[0], status=SubmissionStatus.PROCESSING, started_at=utcnow()
    )
    assert beat(rules, running, 1) is True
    out = app_client.post(
        f"/api/v1/admin/submissions/{running}/cancel", headers=bearer(people.root[1])
    )
    assert out.json()["status"] == "cancelled"
    assert beat(rules, running, 1) is False  # the worker learns it no longer owns the row


def test_rerun_is_a_new_attempt_on_the_queue(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    done = add_submission(
        rules, people.alice[0], result_metrics=metrics(3.0), logs="old", public_logs="old"
    )
    out = app_client.post(
        f"/api/v1/admin/submissions/{done}/rerun", headers=bearer(people.root[1])
    ).json()
    assert (out["status"], out["attempt"], out["result_metrics"], out["public_logs"]) == (
        "queued",
        2,
        None,
        None,
    )
    assert queued_job_ids(rules) == [job_id_for(done, 2)]
    busy = app_client.post(
        f"/api/v1/admin/submissions/{done}/rerun", headers=bearer(people.root[1])
    )
    assert busy.status_code == 409


def test_baseline_flag_and_workers_from_the_registry(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    row = add_submission(rules, people.root[0], result_metrics=metrics(2.0))
    out = app_client.post(
        f"/api/v1/admin/submissions/{row}/baseline",
        json={"baseline": True},
        headers=bearer(people.root[1]),
    ).json()
    assert out["is_baseline"] is True
    board = app_client.get("/api/v1/leaderboard").json()
    assert board["entries"] == [] and board["baselines"][0]["submission_id"] == row

    worker = make_worker(rules, name="test-worker-1")
    worker.register_birth()
    try:
        workers = app_client.get("/api/v1/admin/workers", headers=bearer(people.root[1])).json()
    finally:
        worker.register_death()
    assert [(w["name"], w["alive"], w["submission_id"]) for w in workers] == [
        ("test-worker-1", True, None)
    ]
    page = app_client.get("/admin", headers=bearer(people.root[1]))
    assert "test-worker-1" not in page.text or page.status_code == 200


def test_submissions_csv_lists_everyone(
    app_client: TestClient, rules: Settings, people: People
) -> None:
    a = add_submission(rules, people.alice[0], result_metrics=metrics(3.0))
    b = add_submission(rules, people.bob[0], status=SubmissionStatus.QUEUED)
    text = app_client.get("/api/v1/admin/submissions.csv", headers=bearer(people.root[1])).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(int(r["id"]), r["participant"], r["status"], r["score"]) for r in rows] == [
        (a, "alice", "completed", "3.0"),
        (b, "bob", "queued", ""),
    ]


@postgres_only
def test_events_stream_each_change_until_the_end(live_server: LiveServer, people: People) -> None:
    settings = live_server.settings
    row = add_submission(settings, people.alice[0], status=SubmissionStatus.QUEUED)

    def move() -> None:
        time.sleep(1.2)
        _set(settings, row, status=SubmissionStatus.PROCESSING, started_at=utcnow(), worker_id="w1")
        time.sleep(1.2)
        _set(
            settings,
            row,
            status=SubmissionStatus.COMPLETED,
            finished_at=utcnow(),
            result_metrics=metrics(4.0),
        )

    mover = threading.Thread(target=move)
    mover.start()
    seen: list[tuple[str, dict[str, object]]] = []
    with httpx.stream(
        "GET",
        f"{live_server.url}/api/v1/submissions/{row}/events",
        headers=bearer(people.alice[1]),
        timeout=30,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                seen.append((event, json.loads(line[6:])))
    mover.join()
    statuses = [(e, d.get("status"), d.get("queue_position")) for e, d in seen]
    assert statuses == [
        ("submission", "queued", 1),
        ("submission", "processing", None),
        ("submission", "completed", None),
        ("end", None, None),
    ]
    final = seen[2][1]
    assert {"label": "score", "value": "4"} in final["figures"]  # type: ignore[operator]
    # Someone else cannot open the stream.
    other = httpx.get(
        f"{live_server.url}/api/v1/submissions/{row}/events",
        headers=bearer(people.bob[1]),
        timeout=10,
    )
    assert other.status_code == 404


def _set(settings: Settings, submission_id: int, **values: object) -> None:
    with db.session_scope(settings) as session:
        session.execute(update(Submission).where(Submission.id == submission_id).values(**values))
