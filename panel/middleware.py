"""Static files for gunicorn: WhiteNoise, reading from the installed apps when collectstatic has not run."""

from __future__ import annotations

import os
from typing import Any

from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise that says nothing about a missing STATIC_ROOT: bin/run serves from the apps (finders) instead."""

    def add_files(self, root: Any, prefix: Any = None) -> None:
        if os.path.isdir(root):
            super().add_files(root, prefix=prefix)
