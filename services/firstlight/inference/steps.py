"""A workflow step from its proto (PredictWorkflow, and PredictVideo with a workflow)."""

from __future__ import annotations

from firstlight.inference.core import Step
from firstlight.v1 import inference_pb2


def step_from_proto(s: inference_pb2.WorkflowStep) -> Step:
    return Step(
        model_id=s.model_id,
        version=s.model_version,
        concepts=tuple(s.concepts),
        top_k=s.top_k,
        min_score=s.min_score,
        gate_concepts=tuple(s.gate_concepts),
        gate_step=s.gate_step,
        gate_min_score=s.gate_min_score,
    )
