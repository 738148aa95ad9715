"""Prints its whole environment, looking for the platform's secrets."""

import json
import os

print(json.dumps(dict(os.environ)))
