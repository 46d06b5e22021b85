"""Data quality and model analysis (pure: numpy / scikit-learn / torch; no grpc, kafka, qdrant
or generated code).

- ``neighbors``: k nearest neighbours of every embedding (blocked matrix products; PCA
  candidates + exact re-rank at scale).
- ``duplicates``: exact (content hash) and near-duplicates (embedding cosine, perceptual hash),
  grouped, with the member to keep.
- ``splits``: leaks of duplicate groups across train / validation / test, the group-aware
  stratified split (duplicate groups or video ids), class balance per split.
- ``outliers``: kNN-distance outlier / uniqueness scores (app-wide, within a concept), the most
  representative inputs per concept.
- image metrics (blur, brightness, ... near-blank; the issues they flag) live in
  ``firstlight.media.image_metrics``: ingestion measures them on its decode and stores them.
- ``slices``: worst slices of a model version (concept, metadata, quality bucket, embedding
  cluster) with Wilson intervals.
- ``health``: the pass / warn / fail report built from all of these.
"""
