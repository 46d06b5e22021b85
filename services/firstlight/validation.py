from firstlight.domain.validation import *  # noqa: F403  # shim: removed after the branches merge
