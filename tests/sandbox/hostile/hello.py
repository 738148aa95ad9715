"""Well-behaved: writes to both streams, reports where it runs, exits with the code it is given."""

import json
import os
import sys

print("hello stdout")
print("hello stderr", file=sys.stderr)
print(json.dumps({"cwd": os.getcwd(), "files": sorted(os.listdir("."))}))
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
