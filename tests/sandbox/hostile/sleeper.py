"""Sleeps for the number of seconds it is given."""

import sys
import time

time.sleep(float(sys.argv[1]))
