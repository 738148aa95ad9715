"""What a new user meets on the pages: error pages that keep their navigation bar, organisers'
buttons that fit the submission's state, a leaderboard that says what it ranks and links where the
viewer may go, durations, the public task page, and a log box that says when it is empty."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edc.config import Settings
from edc.models import utcnow
from edc.portal import presentation
from edc.portal.app import create_app
from edc.status import ReviewState, SubmissionStatus
from edc.tasks.task import load_task
from tests.support.competition import (
    PASSWORD,
    add_submission,
    bundled_metric,
    csrf_from,
    make_user,
    metrics,
    web_login,
)

HTML = {"accept": "text/html"}


@pytest.fixture
def people(settings: Settings) -> dict[str, int]:
    return {
        "alice": make_user(settings, "alice")[0],
        "bob": make_user(settings, "bob")[0],
        "root": make_user(settings, "root", admin=True, password=PASSWORD)[0],
    }


@pytest.fixture
def client(settings: Settings, people: dict[str, int]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def page(client: TestClient, path: str) -> str:
    response = client.get(path, headers=HTML)
    assert response.status_code == 200, response.text
    return response.text


def navbar(html: str) -> str:
    return html[html.index("<nav") : html.index("</nav>")]


def row(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start : html.index("</tr>", start)]


# --- 1. error pages keep the session's navigation bar ---------------------------------------------


def test_error_pages_keep_the_logged_in_navbar(client: TestClient) -> None:
    web_login(client, "alice")
    for path, status, sentence in (
        ("/submissions/987654", 404, "There is no submission 987654."),
        ("/admin", 403, "organisers"),
        ("/no/such/page", 404, "There is nothing at /no/such/page."),
    ):
        response = client.get(path, headers=HTML)
        assert response.status_code == status, path
        assert sentence in response.text
        bar = navbar(response.text)
        assert 'id="nav-user"' in bar and "alice" in bar and "Log out" in bar, path
        assert "Log in" not in bar and "Sign up" not in bar, path
        assert "/admin" not in bar  # alice is no organiser
        # The log-out form works from the error page: it carries a valid CSRF token.
        token = csrf_from(response.text)
    logout = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert logout.status_code == 303
    after = client.get("/submissions/987654", headers=HTML, follow_redirects=False)
    assert after.status_code == 303 and after.headers["location"].startswith("/login")


def test_error_pages_show_the_admin_link_to_organisers_and_log_in_to_visitors(
    client: TestClient,
) -> None:
    anonymous = client.get("/no/such/page", headers=HTML)
    assert anonymous.status_code == 404
    assert "Log in" in navbar(anonymous.text) and 'id="nav-user"' not in anonymous.text
    web_login(client, "root")
    response = client.get("/submissions/987654", headers=HTML)
    assert response.status_code == 404
    bar = navbar(response.text)
    assert 'href="/admin"' in bar and "root" in bar and "Log in" not in bar


# --- 2. organisers' buttons follow the state ------------------------------------------------------

# (fields of the row, the actions its admin box offers)
STATES: list[tuple[dict[str, Any], set[str]]] = [
    ({"status": SubmissionStatus.QUEUED}, {"cancel", "disqualify", "baseline"}),
    ({"status": SubmissionStatus.PROCESSING}, {"cancel", "disqualify", "baseline"}),
    ({"status": SubmissionStatus.COMPLETED}, {"rerun", "disqualify", "baseline"}),
    ({"status": SubmissionStatus.FAILED}, {"rerun", "disqualify", "baseline"}),
    ({"status": SubmissionStatus.CANCELLED}, {"rerun", "disqualify", "baseline"}),
    ({"disqualified": True}, {"rerun", "restore", "baseline"}),
    ({"is_baseline": True}, {"rerun", "disqualify", "unbaseline"}),
    ({"review": ReviewState.FLAGGED}, {"rerun", "clear-review", "disqualify", "baseline"}),
    ({"review": ReviewState.CLEARED}, {"rerun", "disqualify", "baseline"}),
]
ACTION_RE = re.compile(r'/admin/submissions/(\d+)/([a-z-]+)"')


def _box_actions(html: str) -> set[str]:
    box = html[html.index('id="admin-actions"') : html.index("Audit (organisers only")]
    return set(re.findall(r'data-action="([a-z-]+)"', box))


def test_the_admin_box_offers_only_what_the_state_allows(
    client: TestClient, settings: Settings, people: dict[str, int]
) -> None:
    rows = [
        (add_submission(settings, people["alice"], result_metrics=metrics(5.0), **fields), shown)
        for fields, shown in STATES
    ]
    web_login(client, "root")
    listing = page(client, "/admin")
    for row_id, shown in rows:
        assert _box_actions(page(client, f"/submissions/{row_id}")) == shown, (row_id, shown)
        in_list = {
            action
            for found_id, action in ACTION_RE.findall(row(listing, f"admin-submission-{row_id}"))
            if int(found_id) == row_id
        }
        assert in_list == shown, (row_id, shown)


def test_an_offered_action_is_accepted_and_offers_its_undo(
    client: TestClient, settings: Settings, people: dict[str, int]
) -> None:
    row_id = add_submission(settings, people["alice"], result_metrics=metrics(5.0))
    web_login(client, "root")
    html = page(client, f"/submissions/{row_id}")
    for action, undo in (("baseline", "unbaseline"), ("disqualify", "restore")):
        done = client.post(
            f"/admin/submissions/{row_id}/{action}",
            data={"csrf_token": csrf_from(html), "next": f"/submissions/{row_id}"},
            follow_redirects=False,
        )
        assert done.status_code == 303
        html = page(client, f"/submissions/{row_id}")
        offered = _box_actions(html)
        assert undo in offered and action not in offered


def test_admin_actions_rule() -> None:
    names = [
        a.name
        for a in presentation.admin_actions(
            SubmissionStatus.PROCESSING, disqualified=True, baseline=True, review=None
        )
    ]
    assert names == ["cancel", "restore", "unbaseline"]


# --- 3. the leaderboard says what it ranks, links where the viewer may go -------------------------


@pytest.fixture
def board(settings: Settings, people: dict[str, int]) -> dict[str, int]:
    t0 = utcnow() - timedelta(hours=5)
    return {
        "alice": add_submission(
            settings,
            people["alice"],
            result_metrics=metrics(4.0, (3.0, 5.0), tpot=3.5),
            created_at=t0,
        ),
        "bob": add_submission(
            settings, people["bob"], result_metrics=metrics(6.0), created_at=t0 + timedelta(hours=2)
        ),
        "baseline": add_submission(
            settings, people["root"], result_metrics=metrics(8.0), is_baseline=True
        ),
    }


def _links(html: str) -> list[str]:
    return re.findall(r'href="(/submissions/\d+)"', html)


def test_the_leaderboard_names_its_figures_and_units(
    client: TestClient, board: dict[str, int]
) -> None:
    html = page(client, "/leaderboard")
    label = presentation.metric_label(bundled_metric())
    assert label == "End-to-end time per token, p50 (ms)"
    assert f">{label}</strong>, lower is better" in html
    # No header means two things: ranks and submission ids are told apart.
    assert "<th>#</th>" not in html
    assert "<th>Rank</th>" in html and "<th>Submission</th>" in html
    legend = html[
        html.index('id="score-legend"') : html.index("</div>", html.index("score-legend"))
    ]
    assert "median of those runs" in legend and "95% interval" in legend
    assert "TPOT p50</strong> = Time per output token after the first" in legend
    assert "first run alone" in legend  # why TPOT differs from the score
    assert re.search(r"\d/s\b", html) is None  # one unit everywhere: tok/s
    assert "250 tok/s" in row(html, f"entry-{board['alice']}")
    chart = json.loads(
        re.search(r'id="history-data">(.*?)</script>', html, re.S).group(1)  # type: ignore[union-attr]
    )
    assert (chart["label"], chart["unit"]) == (label, "ms")


def test_reported_columns_leave_out_the_ranked_figure() -> None:
    headers = [c.header for c in presentation.reported_columns("throughput.output_tokens_per_s")]
    assert headers == ["TPOT p50", "TTFT p50"]
    assert len(presentation.reported_columns(bundled_metric())) == 3


def test_leaderboard_rows_link_only_where_the_viewer_may_open(
    client: TestClient, board: dict[str, int]
) -> None:
    assert _links(page(client, "/leaderboard")) == []  # a visitor may open none

    web_login(client, "alice")
    html = page(client, "/leaderboard")
    own = f"/submissions/{board['alice']}"
    assert own in _links(row(html, f"entry-{board['alice']}"))
    assert _links(row(html, f"entry-{board['bob']}")) == []
    assert _links(row(html, f"baseline-{board['baseline']}")) == []
    for link in _links(html[html.index("<main") :]):
        assert client.get(link, headers=HTML).status_code == 200, link  # no dead link

    client.post("/logout", data={"csrf_token": csrf_from(html)})
    web_login(client, "root")
    html = page(client, "/leaderboard")
    for key in ("alice", "bob"):
        assert f"/submissions/{board[key]}" in _links(row(html, f"entry-{board[key]}"))
    assert f"/submissions/{board['baseline']}" in _links(row(html, f"baseline-{board['baseline']}"))


def test_durations_on_the_submission_page_and_lists(
    client: TestClient, settings: Settings, people: dict[str, int]
) -> None:
    queued = utcnow() - timedelta(hours=1)
    row_id = add_submission(
        settings,
        people["alice"],
        result_metrics=metrics(5.0),
        queued_at=queued,
        started_at=queued + timedelta(seconds=12),
        finished_at=queued + timedelta(seconds=12 + 92),
    )
    waiting = add_submission(settings, people["alice"], status=SubmissionStatus.QUEUED)
    web_login(client, "alice")
    html = page(client, f"/submissions/{row_id}")
    figures = html[html.index('id="figures"') : html.index("</tbody>", html.index('id="figures"'))]
    assert "queued for</th><td>12 s" in figures and "ran for</th><td>1 min 32 s" in figures
    assert re.search(r"\d\d:\d\d:\d\d UTC", html)  # times to the second on one submission's page
    listing = page(client, "/")
    assert "queued 12 s · ran 1 min 32 s" in row(listing, f"submission-{row_id}")
    assert "data-timing" not in row(listing, f"submission-{waiting}")  # nothing over yet

    client.post("/logout", data={"csrf_token": csrf_from(listing)})
    web_login(client, "root")
    admin = page(client, "/admin")
    assert "queued 12 s · ran 1 min 32 s" in row(admin, f"admin-submission-{row_id}")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.42, "0.4 s"),
        (42, "42 s"),
        (92, "1 min 32 s"),
        (120, "2 min"),
        (3600 * 2 + 300, "2 h 5 min"),
        (86400 * 3 + 3600 * 4 + 5, "3 d 4 h"),
    ],
)
def test_duration_words(seconds: float, text: str) -> None:
    assert presentation.duration(seconds) == text


# --- 4. the public task page ----------------------------------------------------------------------


def test_the_task_page_tells_the_task_rules_and_format_and_nothing_hidden(
    settings: Settings,
) -> None:
    start = utcnow() + timedelta(days=1)
    rules = settings.model_copy(
        update={
            "max_upload_mb": 37,
            "submissions_per_day": 3,
            "max_queued_per_user": 2,
            "competition_start": start,
            "competition_end": start + timedelta(days=30),
        }
    )
    task = load_task(rules)
    with TestClient(create_app(rules)) as client:
        home = page(client, "/")
        assert 'href="/task"' in navbar(home)  # reachable from every page
        html = page(client, "/task")  # for visitors too
    for text in (
        task.name,
        f"version {task.version}",
        task.description[:60],
        "End-to-end time per token, p50 (ms), lower is better",
        f"exactly {task.max_new_tokens}",
        f"{task.limits.load_timeout_s:g} s",
        f"{task.limits.run_timeout_s:g} s",
        f"{task.limits.memory_mb} MB",
        "a zip of at most 37 MB",
        "3 per participant per 24 hours",
        "2 waiting or running at once",
        f"The competition opens at {start:%Y-%m-%d %H:%M} UTC.",
        "submission.py",
        "EDC_SOCKET",
        '"vocab_size": 256',
        "wrong_output",
        "the Python standard library and numpy, nothing else",  # the task's runtime
    ):
        assert text in html, text
    # Nothing hidden: not the task file's seed, nor the platform's secret.
    assert str(task.sampling.seed) not in html
    assert rules.secret_key not in html
    assert "seed" not in html.lower()


# --- 5. an empty log box says so ------------------------------------------------------------------


def test_an_empty_log_box_says_no_output_was_captured(
    client: TestClient, settings: Settings, people: dict[str, int]
) -> None:
    empty = add_submission(settings, people["alice"], result_metrics=metrics(5.0))
    chatty = add_submission(settings, people["alice"], public_logs="loading <weights>\n")
    waiting = add_submission(settings, people["alice"], status=SubmissionStatus.QUEUED)
    web_login(client, "alice")
    html = page(client, f"/submissions/{empty}")
    assert re.search(r'<pre id="public-logs"[^>]* hidden>', html)
    assert re.search(r'<p id="public-logs-empty"[^>]*>No output was captured.</p>', html)
    html = page(client, f"/submissions/{chatty}")
    assert "loading &lt;weights&gt;" in html  # escaped, not markup
    assert re.search(r'<p id="public-logs-empty"[^>]* hidden>', html)
    assert "No output yet." in page(client, f"/submissions/{waiting}")

    client.post("/logout", data={"csrf_token": csrf_from(html)})
    web_login(client, "root")
    html = page(client, f"/submissions/{empty}")
    assert re.search(r'id="full-logs-empty">No output was captured.</p>', html)
