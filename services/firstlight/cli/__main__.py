"""``python -m firstlight.cli``: the console script, unbuffered (logs reach a pipe at once)."""

import os

from firstlight.cli import app

os.environ.setdefault("PYTHONUNBUFFERED", "1")
app()
