"""The portal's own request metrics, the metrics token and the scrape formats."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from edc.config import Settings
from edc.portal.app import create_app
from tests.observability.scrape import scrape, value


def test_requests_are_counted_by_route_template(sqlite_settings: Settings) -> None:
    with TestClient(create_app(sqlite_settings)) as client:
        for _ in range(2):
            assert client.get("/healthz").status_code == 200
        for submission_id in (11, 12, 13):
            client.get(f"/api/v1/submissions/{submission_id}")  # not logged in: refused
        client.get("/submissions/11", headers={"Accept": "application/json"})
        client.get("/no/such/page")
        client.get("/static/no-such-file.css")
        samples = scrape(client)

    def requests(route: str, status: str) -> float:
        return value(samples, "edc_http_requests_total", method="GET", route=route, status=status)

    assert requests("/healthz", "200") == 2
    # One series for all ids; the API's route apart from the page of the same shape.
    assert requests("/api/v1/submissions/{submission_id}", "401") == 3
    routes = {
        dict(labels)["route"] for name, labels in samples if name == "edc_http_requests_total"
    }
    assert "/submissions/{submission_id}" in routes
    assert not any(route.endswith(("/11", "/12", "/13")) for route in routes)
    assert requests("<unmatched>", "404") == 1
    assert requests("/static/{path}", "404") == 1
    duration = {"method": "GET", "route": "/healthz"}
    assert value(samples, "edc_http_request_duration_seconds_count", **duration) == 2
    assert value(samples, "edc_http_request_duration_seconds_bucket", le="+Inf", **duration) == 2
    # The process's own figures come with them.
    assert value(samples, "process_resident_memory_bytes") > 0


def test_the_token_guards_the_metrics_when_set(sqlite_settings: Settings) -> None:
    guarded = sqlite_settings.model_copy(update={"metrics_token": "s3cret-scrape-token"})
    with TestClient(create_app(guarded)) as client:
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer not-it"})
        basic = client.get("/metrics", headers={"Authorization": "Basic s3cret-scrape-token"})
        browser = client.get("/metrics", headers={"Accept": "text/html"})
        samples = scrape(client, headers={"Authorization": "bearer s3cret-scrape-token"})
    for refused in (missing, wrong, basic, browser):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["code"] == "not_authenticated"
        assert "edc_" not in refused.text
    assert value(samples, "edc_metrics_source_up", source="database") == 1


def test_without_a_token_anyone_may_scrape(sqlite_settings: Settings) -> None:
    with TestClient(create_app(sqlite_settings)) as client:
        samples = scrape(client, headers={"Authorization": "Bearer anything"})
    assert value(samples, "edc_queue_depth", hardware_class="cpu") == 0


def test_openmetrics_when_the_scraper_asks_for_it(sqlite_settings: Settings) -> None:
    with TestClient(create_app(sqlite_settings)) as client:
        response = client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(response.text)}
    assert families["edc_uploads"].type == "counter"
    assert families["edc_evaluation_duration_seconds"].type == "histogram"
    assert families["edc_workers_alive"].type == "gauge"
