"""Reads, lists or writes the paths it is given (``read:/etc/x``, ``list:/root``, ``write:/usr/x``).

Prints for each what happened: the content read, the entries listed, ``ok``, or the errno name.
"""

import errno
import json
import os
import sys


def attempt(op: str, path: str) -> object:
    try:
        if op == "read":
            with open(path, "rb") as f:
                return {"content": f.read(4096).decode(errors="replace")}
        if op == "list":
            return {"entries": sorted(os.listdir(path))}
        if op == "write":
            with open(path, "w") as f:
                f.write("written from inside the sandbox\n")
            return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    raise SystemExit(f"unknown op {op}")


print(json.dumps({arg: attempt(*arg.split(":", 1)) for arg in sys.argv[1:]}))
