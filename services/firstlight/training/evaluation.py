from firstlight.domain.evaluation import *  # noqa: F401,F403  # shim: removed after the branches merge
from firstlight.domain.promotion import decide_promotion, metric_direction, promotion_metric, should_promote  # noqa: F401  # shim
