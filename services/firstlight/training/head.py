from firstlight.domain.heads.linear import *  # noqa: F401,F403  # shim: removed after the branches merge
