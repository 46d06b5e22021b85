"""``firstlight`` command line: start the local stack, upload, search, predict, train, curate.

One module per command group; each registers its commands on :data:`app` through
:func:`firstlight.cli.app.command`, which gives every command the one error presentation
(:mod:`firstlight.cli.errors`). The console script is ``firstlight = "firstlight.cli:app"``."""

# Imported for their commands, in the order ``--help`` lists them (hence no sorting here).
# isort: off
from firstlight.cli import (  # noqa: F401
    stack,
    apps,
    inputs,
    search,
    predict,
    models,
    evaluate,
    curation,
    quality,
    experiments,
    video,
)

# isort: on
from firstlight.cli.app import app

__all__ = ["app"]
