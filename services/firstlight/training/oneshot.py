from firstlight.domain.heads.oneshot import *  # noqa: F403  # shim: removed after the branches merge
