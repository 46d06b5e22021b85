"""Pure domain code shared by several services: identifier validation, stratified splits and
dataset versions, the group-aware split (frames of one video stay together), video frame ids,
labeling batches without near-duplicates, evaluation metrics and reports, and the one
promotion rule.

It imports no service package and no transport (no grpc, kafka, qdrant, triton or generated
``firstlight.v1`` code): only :mod:`firstlight.errors` and numerical libraries."""
