"""Tries the host's loopback services and looks for any interface or route besides loopback.

Only ever connects to 127.0.0.1: nothing is sent to an address outside this machine.
"""

import errno
import json
import socket
import sys


def connect(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return "connected"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def proc_lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError as exc:
        return [f"unreadable: {exc}"]


report = {
    "connect": {port: connect(int(port)) for port in sys.argv[1:]},
    "if_nameindex": sorted(name for _, name in socket.if_nameindex()),
    "proc_net_dev": sorted(line.split(":")[0].strip() for line in proc_lines("/proc/net/dev")[2:]),
    "routes": proc_lines("/proc/net/route")[1:],
}
print(json.dumps(report))
