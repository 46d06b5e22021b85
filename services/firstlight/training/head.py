from firstlight.domain.heads.linear import *  # noqa: F403  # shim: removed after the branches merge
