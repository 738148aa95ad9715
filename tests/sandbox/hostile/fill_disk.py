"""Writes to the scratch directory until the disk is full."""

import errno
import json

written = 0
error = None
chunk = b"x" * (1024 * 1024)
try:
    with open("/tmp/fill", "wb") as f:
        while written < 4 * 1024**3:
            f.write(chunk)
            f.flush()
            written += len(chunk)
except OSError as exc:
    error = errno.errorcode.get(exc.errno or 0, str(exc))
print(json.dumps({"written": written, "error": error}))
