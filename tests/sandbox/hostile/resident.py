"""Holds the number of MiB it is given resident for a moment, then exits."""

import sys
import time

block = bytearray(int(sys.argv[1]) * 1024 * 1024)
block[::4096] = b"x" * len(block[::4096])
time.sleep(0.2)
print(len(block))
