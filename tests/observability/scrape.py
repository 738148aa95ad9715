"""Reading /metrics the way Prometheus does: with prometheus_client's own parser."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, headers: dict[str, str] | None = None) -> Samples:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, (
        f"no series {name}{labels}; have {sorted(k for k in samples if k[0] == name)}"
    )
    return samples[key]


def scrape_until(
    client: TestClient, settled: Callable[[Samples], bool], *, timeout_s: float = 20.0
) -> Samples:
    """Scrape until ``settled`` holds: the histograms follow a change in the background."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(client)
        if settled(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)
