"""Leaves a daemon behind (double fork, new session, deaf to SIGTERM and SIGHUP).

The daemon appends to the heartbeat file it is given every 20 ms for a minute; the parent exits
as soon as the first beat is written.
"""

import os
import signal
import sys
import time

heartbeat = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(heartbeat, "a") as f:
                f.write(".")
            time.sleep(0.02)
    os._exit(0)
while not os.path.exists(heartbeat):
    time.sleep(0.01)
print("daemonized", flush=True)
