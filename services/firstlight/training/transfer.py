from firstlight.domain.heads.transfer import *  # noqa: F401,F403  # shim: removed after the branches merge
