"""A fork bomb: every child forks as fast as it can; the first process reports when refused."""

import json
import os
import time


def bomb() -> None:
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.05)


made = 0
refused = None
for _ in range(100_000):
    try:
        pid = os.fork()
    except OSError as exc:
        refused = exc.strerror
        break
    if pid == 0:
        bomb()
    made += 1
print(json.dumps({"made": made, "refused": refused}), flush=True)
os._exit(0)
