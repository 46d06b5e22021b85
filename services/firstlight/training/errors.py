from firstlight.domain.errors import *  # noqa: F401,F403  # shim: removed after the branches merge
