"""A participant on its own test host: wait for the portal, upload zips, wait for the results.

Run inside the client host's namespace (the test's own process cannot reach the hosts' addresses):

    participant.py PORTAL_URL TOKEN TIMEOUT_S ZIP...

Prints one JSON object: the final submissions and the seconds from the first upload to the last
result.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

FINAL = ("completed", "failed", "cancelled")


def wait_ready(client: httpx.Client, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the portal at {client.base_url} was not ready in {timeout_s:.0f} s")
        time.sleep(0.2)


def main(url: str, token: str, timeout_s: float, zips: list[Path]) -> dict[str, Any]:
    with httpx.Client(
        base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        wait_ready(client, timeout_s=60)
        started = time.monotonic()
        ids = []
        for path in zips:
            response = client.post(
                "/api/v1/submissions",
                files={"file": (path.name, path.read_bytes(), "application/zip")},
            )
            if response.status_code != 201:
                raise SystemExit(f"upload of {path.name} refused: {response.text}")
            ids.append(response.json()["id"])
        deadline = started + timeout_s
        final: dict[int, dict[str, Any]] = {}
        while len(final) < len(ids):
            for submission_id in ids:
                if submission_id not in final:
                    body = client.get(f"/api/v1/submissions/{submission_id}").json()
                    if body["status"] in FINAL:
                        final[submission_id] = body
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return {
            "submissions": [final.get(i, {"id": i, "status": "unfinished"}) for i in ids],
            "seconds": round(time.monotonic() - started, 2),
        }


if __name__ == "__main__":
    portal_url, api_token, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    print(json.dumps(main(portal_url, api_token, timeout, [Path(p) for p in sys.argv[4:]])))
