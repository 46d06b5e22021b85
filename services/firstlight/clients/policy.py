"""The one retry/deadline policy for calling the services.

* Every call has a deadline: :data:`DEFAULT_DEADLINE_S`, or the longer one of the RPCs that do
  real work (training-set freezes, evaluations, label-error searches) in :data:`DEADLINES_S`.
* Side-effect-free RPCs (:data:`IDEMPOTENT_RPCS`) retry on UNAVAILABLE with the jittered
  exponential backoff of :mod:`firstlight.runtime.retry`; every other RPC is sent once.
"""

from __future__ import annotations

from firstlight.runtime.retry import DEFAULT_POLICY, INTERNAL_POLICY, NO_RETRY, RetryPolicy

__all__ = ["DEADLINES_S", "DEFAULT_DEADLINE_S", "DEFAULT_POLICY", "IDEMPOTENT_RPCS", "INTERNAL_POLICY", "NO_RETRY", "RetryPolicy", "deadline_for"]

#: RPCs with no side effect, hence retried on UNAVAILABLE.
IDEMPOTENT_RPCS = frozenset({
    "EmbedImages", "GetApp", "GetInput", "ListInputs", "ListConcepts", "GetQualityHistogram",
    "SearchByImage", "SearchByText", "GetIndexStats", "GetVectors",
    "Predict", "ListModels", "PredictWorkflow",
    "GetDataset", "GetTrainingJob", "ListModelVersions", "ListDatasetRows", "ScoreInputs",
    "SuggestInputsForLabeling", "FindLabelErrors", "GetDriftReport",
    "GetCurationPolicy", "ListLabelingQueue", "ListLearningRounds", "ListApiKeys",
    "RunHealthCheck", "GetWorstSlices", "GetScoringJob", "ListPoolPredictions",
    "EmbedTexts", "DescribeEmbeddingModel", "GetVideoUpload",
    "GetEmbeddingMapJob", "ListEmbeddingMapPoints", "FindDuplicateGroups",
    "GetHeadWeights", "ExplainPrediction", "ScoreUniqueness", "GetDeepExplainer",
    "GetIndexingBacklog",
})  # fmt: skip

DEFAULT_DEADLINE_S = 60.0
#: RPCs that do real work before they answer.
DEADLINES_S: dict[str, float] = {
    "CreateDataset": 300.0,
    "EvaluateModelVersion": 300.0,
    "ExtendDataset": 300.0,
    "ScoreInputs": 300.0,
    "CompareModelVersions": 600.0,
    "FindLabelErrors": 600.0,
    "SuggestInputsForLabeling": 300.0,
    "GetDriftReport": 300.0,
    "RunHealthCheck": 600.0,  # the first check of an app reads and decodes every image
    "KeepOneDuplicate": 300.0,  # reads and decodes the group's images unless a check already did
    "ExplainPrediction": 120.0,  # the first call of a process loads the torch backbone
    "FindDuplicateGroups": 300.0,  # may decode images stored before their signatures
    "ScoreUniqueness": 300.0,  # reads up to 20,000 vectors and runs a kNN pass over them
    "SetEmbeddingModel": 180.0,
    "ListEmbeddingMapPoints": 300.0,  # may score the page with a model that did not score the pool
    "StreamInputs": 600.0,
    # A video's upload and decode (the byte and duration limits bound them; 3 h of video at
    # 20x real time is 9 min).
    "UploadVideo": 3600.0,
    "PredictVideo": 3600.0,
    "BulkAnnotate": 120.0,
    "ReembedInputs": 120.0,  # a rotated scan's page reads up to 1,000 stored headers
    "StreamTrainingProgress": 24 * 3600.0,
    # The services' calls to each other. A query's embedding is waited on by a user's search;
    # describing a model may load it into Triton first. ResolveApiKey is on every RPC's path
    # (sent once, not retried: the interceptor falls back on its cache instead).
    "EmbedImages": 30.0,
    "EmbedTexts": 30.0,
    "DescribeEmbeddingModel": 120.0,
    "ResolveApiKey": 5.0,
}


def deadline_for(rpc: str) -> float:
    return DEADLINES_S.get(rpc, DEFAULT_DEADLINE_S)
