"""Signals everything it can name: its parent, pid 1, every process (``kill -9 -1``) and a victim.

argv: the victim's host pid and a marker in its command line. If the victim is visible, the
sandbox shares the host's pid namespace: say so and stop before ``kill -1`` can do harm.
"""

import json
import os
import signal
import sys

victim, marker = int(sys.argv[1]), sys.argv[2]


def visible(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False


def send(pid: int) -> str:
    try:
        os.kill(pid, signal.SIGKILL)
        return "sent"
    except OSError as exc:
        return type(exc).__name__


report: dict[str, object] = {"victim_visible": visible(victim)}
if report["victim_visible"]:
    print(json.dumps(report))
    sys.exit(3)
report["victim"] = send(victim)
parent = os.getppid()
report["parent"] = send(parent) if parent > 1 else f"parent is {parent}"
report["pid1"] = send(1) if os.getpid() != 1 else "I am pid 1"
report["everyone"] = send(-1)
print(json.dumps(report))
