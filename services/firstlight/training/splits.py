from firstlight.domain.splits import *  # noqa: F403  # shim: removed after the branches merge
