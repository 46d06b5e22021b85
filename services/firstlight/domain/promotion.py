"""The one promotion rule: does a newly trained version replace the serving one?

Used by every template (heads and deep versions alike) through the training core's single
"record version / promote / publish" path, and by curation when it reports a round."""

from __future__ import annotations

import math
from collections.abc import Mapping

from firstlight.domain.errors import EvaluationError
from firstlight.domain.evaluation import METRICS, EvaluationReport


def _f(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def metric_direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is (ECE, log loss, any "*loss*" a template reports)."""
    if metric in METRICS:
        return METRICS[metric]
    return -1 if "loss" in metric or metric in ("ece", "error") else 1


def promotion_metric(candidate: Mapping[str, float | None], policy_metric: str = "", primary: str = "accuracy") -> tuple[str, str]:
    """Which validation metric decides: the policy's where the template reports it (the candidate
    has it), else the template's primary metric. Returns (metric, a note on the choice or "")."""
    if policy_metric and candidate.get(policy_metric) is not None:
        return policy_metric, ""
    if policy_metric and policy_metric != primary:
        return primary, f" (the template reports no {policy_metric}: decided on its primary metric {primary})"
    return primary, ""


def decide_promotion(
    candidate: Mapping[str, float | None],
    serving: Mapping[str, float | None] | None,
    policy_metric: str = "",
    min_gain: float = 0.0,
    primary: str = "accuracy",
) -> tuple[bool, str]:
    """The one promotion rule, for heads and deep versions alike, on validation metrics (both
    versions evaluated on the same frozen validation split). The deciding metric is the policy's
    where the template reports it, else the template's primary metric (mAP for a detector, the
    new-concept probe for an embedder). With no serving version the candidate is promoted;
    otherwise only if it is strictly better by more than ``min_gain`` (a tie keeps the serving
    version). For ECE and losses lower is better."""
    if not (isinstance(min_gain, (int, float)) and math.isfinite(min_gain) and min_gain >= 0):
        raise EvaluationError(f"min_gain must be a finite number >= 0, got {min_gain!r}")
    metric, why_metric = promotion_metric(candidate, policy_metric, primary)
    cand = candidate.get(metric)
    cand = None if cand is None else float(cand)
    if serving is None:
        return True, f"promoted: no version is serving yet (candidate {metric} {_f(cand)}){why_metric}"
    if cand is None:
        return False, f"kept the serving version: the candidate has no {metric}{why_metric}"
    serv = serving.get(metric)
    if serv is None:
        return True, f"promoted: the serving version has no {metric}, the candidate has {_f(cand)}{why_metric}"
    serv = float(serv)
    sign = metric_direction(metric)
    gain = (cand - serv) * sign
    direction = "higher" if sign > 0 else "lower"
    if gain > min_gain:
        return True, f"promoted: {metric} {_f(cand)} vs serving {_f(serv)} ({direction} by {abs(cand - serv):.4f} > min_gain {min_gain:g}){why_metric}"
    if gain == 0:
        why = "a tie keeps the serving version"
    elif gain < 0:
        why = f"the candidate is worse by {abs(cand - serv):.4f}"
    else:
        why = f"the gain {gain:.4f} is not more than min_gain {min_gain:g}"
    return False, f"kept the serving version: {metric} {_f(cand)} vs serving {_f(serv)}; {why}{why_metric}"


def metrics_of(report: EvaluationReport) -> dict[str, float | None]:
    """Every metric of ``METRICS`` a head's evaluation report holds (what the rule may read)."""
    return {m: report.metric(m) for m in METRICS}


def should_promote(
    candidate: EvaluationReport,
    serving: EvaluationReport | None,
    metric: str = "accuracy",
    min_gain: float = 0.0,
) -> tuple[bool, str]:
    """:func:`decide_promotion` for heads, whose evaluation reports every metric of ``METRICS``
    (accuracy is their primary metric)."""
    if metric not in METRICS:
        raise EvaluationError(f"unknown promotion metric {metric!r}; known: {', '.join(METRICS)}")
    return decide_promotion(
        metrics_of(candidate),
        None if serving is None else metrics_of(serving),
        metric,
        min_gain,
        primary="accuracy",
    )
