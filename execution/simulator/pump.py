"""The simulated Manager API's pump in a process of its own (``SIM_MANAGER_PUMP_IN`` process).

The real ``MT5Manager`` receives and decodes the pump in a native thread that does not hold
Python's interpreter lock; only its calls into the sinks do. A pump thread of the simulator's
own, reading the database through the ORM in the monitor's process, would hold that lock for
most of each cycle. This process does the reading and the comparing instead
(``manager.serve_pump``); the connection's process keeps the pumped copy and calls the sinks
from what it sends. This module imports nothing of Django's before ``django.setup()``: a
spawned interpreter imports it to find its target.
"""

from __future__ import annotations

import os
from typing import Any


def main(pipe: Any, settings_module: str, database: dict[str, Any]) -> None:
    """Set Django up on the parent's settings and database (the test database's name included)
    and serve the parent's connection until it ends."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    from django.conf import settings

    settings.DATABASES = {**settings.DATABASES, "default": database}
    import django

    django.setup()
    from execution.simulator.manager import serve_pump

    serve_pump(pipe)
