from firstlight.domain.heads.oneshot import *  # noqa: F401,F403  # shim: removed after the branches merge
