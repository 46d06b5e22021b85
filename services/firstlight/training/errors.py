from firstlight.domain.errors import *  # noqa: F403  # shim: removed after the branches merge
