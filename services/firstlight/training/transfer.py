from firstlight.domain.heads.transfer import *  # noqa: F403  # shim: removed after the branches merge
