"""Floods stdout and stderr with the number of MiB it is given, then exits cleanly."""

import os
import sys

mib = int(sys.argv[1])
line = b"y" * 1023 + b"\n"
block = line * 1024
for _ in range(mib):
    os.write(1, block)
    os.write(2, block)
