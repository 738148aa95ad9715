"""The competition's fixtures (the app on both databases, users, a live server) live in
``tests/support/live_server.py`` and are registered for every folder by ``tests/conftest.py``.

The names stay importable from here for the modules that still import them from this file; new
code imports the records from ``tests.support.live_server`` and takes the fixtures by name.
"""

from tests.support.live_server import (  # noqa: F401 - re-exported for older imports
    LiveServer,
    People,
    app_client,
    live_server,
    people,
    rules,
)
