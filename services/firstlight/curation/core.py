"""Curation core: the app's inputs and embeddings (the :class:`~firstlight.curation.ports.Platform`
port) and its models' scores, versions and datasets (the training service's API, the
:class:`~firstlight.curation.ports.Training` port) fed to the pure strategy, label-error and
drift modules. No transport here: the adapters are in ``peers``. The same :mod:`strategies` code
drives the AL benchmark (``curation.benchmark``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, cast

import numpy as np

from firstlight.curation import drift, label_errors, strategies
from firstlight.curation.ports import ModelInfo, Platform, RoundLog, Row, Training, VersionInfo
from firstlight.domain import diverse_batch, frames, validation
from firstlight.domain.lru import Lru
from firstlight.errors import FailedPrecondition, InvalidArgument, NotFound

MAX_POOL = 20_000
#: Uniqueness results kept (least recently used dropped): one is ~20,000 × (id + 2 floats).
MAX_UNIQUENESS_CACHE = 8
#: Representatives per concept at most, and inputs per page of ScoreUniqueness.
MAX_REPRESENTATIVES, MAX_UNIQUENESS_PAGE = 50, 1000
#: Image facts kept in memory across checks (least recently used dropped): 2.5 checks of MAX_POOL.
MAX_PIXEL_FACTS = 50_000


@dataclass(frozen=True)
class SuggestionOut:
    input_id: str
    score: float
    difficulty: str
    predicted: str
    confidence: float


@dataclass(frozen=True)
class PixelFacts:
    """What the image checks need from one decode: content hash, tiny-image descriptor, metrics."""

    sha256: str
    thumb: np.ndarray
    quality: object  # firstlight.media.image_metrics.ImageQuality
    canvas: np.ndarray  # 32×32 gray uint8: the crop check (quality.crops)


_SPLIT_NAMES = {1: "train", 2: "validation", 3: "test"}


class Curation:
    def __init__(self, platform: Platform, training: Training, rounds: RoundLog | None = None) -> None:
        self.platform = platform
        self.training = training  # the training service's API: models, versions, datasets, scores
        self.rounds = rounds  # CurationStore: the experiment record (record_round); None in some unit tests
        # Image facts by (app, input id, blob size): computed from the blob once per process
        # (inputs' bytes do not change under an id). Not persisted: a restart recomputes them.
        # An LRU of MAX_PIXEL_FACTS (~1 KB each): one check reads at most MAX_POOL of one app.
        self._pixels: OrderedDict[tuple[str, str], PixelFacts | None] = OrderedDict()  # None: did not decode
        # Uniqueness by (app, digest of its inputs, labels and embedding model, per_concept):
        # the pages of one listing reuse one kNN pass; any new input or label is a new key.
        self._uniqueness: Lru[tuple[str, str, int], Any] = Lru(MAX_UNIQUENESS_CACHE)

    def _model_version(self, app_id: str, model_id: str, version: str) -> tuple[ModelInfo, str]:
        """(model, resolved version id: the given one or the serving one)."""
        model = self.training.model(app_id, model_id)
        version = version or model.serving_version
        if not version:
            raise FailedPrecondition(f"model {model_id!r} has no trained version yet")
        return model, version

    def check_policy_targets(self, app_id: str, model_id: str, dataset_id: str) -> None:
        """NotFound unless the policy's model (and dataset, when it names one) exist."""
        self.training.model(app_id, model_id)  # NotFound from the training service
        if dataset_id and not self.training.latest_dataset_version(app_id, dataset_id):
            raise NotFound(f"dataset {dataset_id!r} does not exist in app {app_id!r}")

    def _version_rows(self, app_id: str, model_id: str, version: str) -> tuple[VersionInfo | None, list[Row]]:
        """(version record, its dataset's rows); (None, []) when training does not know them."""
        v = self.training.version(app_id, model_id, version)
        if v is None:
            return None, []
        return v, self.training.dataset_rows(app_id, v.dataset_id, v.dataset_version)

    def _scores(self, app_id: str, model_id: str, version: str, ids: list[str], X: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(ids, embeddings, probabilities) of the inputs the training service could score
        (the same stored embeddings; an input indexed in between is left out)."""
        scored = self.training.scores(app_id, model_id, version, ids)
        row = {i: k for k, i in enumerate(ids)}
        keep = [row[i] for i in scored.input_ids if i in row]
        return [ids[k] for k in keep], X[keep], np.asarray(scored.proba, dtype=np.float64)[[k for k, i in enumerate(scored.input_ids) if i in row]]

    def _matrix(self, app_id: str, ids: list[str]) -> tuple[list[str], np.ndarray]:
        vectors = self.platform.vectors(app_id, ids)
        kept = [i for i in ids if i in vectors]
        if not kept:
            return [], np.zeros((0, 0), np.float32)
        return kept, np.stack([vectors[i] for i in kept]).astype(np.float32)

    def suggest(
        self, app_id: str, model_id: str, version: str, strategy: str, batch_size: int, seed: int, record_round: bool = False
    ) -> tuple[str, int, list[SuggestionOut], int]:
        """Suggestions, the strategy used, the pool size and (``record_round``) the round number.

        The "already labeled" set the diversity strategies (and typiclust_margin's cold-start
        switch) see is the app's labeled inputs minus the version's validation and test rows:
        held-out inputs are not something the model learned from."""
        validation.app_id(app_id)
        strategy = strategy or strategies.DEFAULT_STRATEGY
        if strategy not in strategies.STRATEGIES or strategy == "mc_dropout":
            valid = [s for s in strategies.STRATEGIES if s != "mc_dropout"]
            raise InvalidArgument(f"unknown strategy {strategy!r} (available here: {', '.join(valid)})")
        size = batch_size or 50
        if not 0 < size <= 1000:
            raise InvalidArgument(f"batch_size must be between 1 and 1000 (got {batch_size})")
        model, version = self._model_version(app_id, model_id, version)
        version_row, rows = self._version_rows(app_id, model_id, version)
        held_out = {r.input_id for r in rows if r.split != 1}
        pool_ids, X = self._matrix(app_id, [i for i, _, _ in self.platform.inputs(app_id, labeled=False)][:MAX_POOL])
        if not pool_ids:
            raise FailedPrecondition(f"app {app_id!r} has no unlabeled, indexed inputs to suggest")
        labeled_ids = [i for i, _, _ in self.platform.inputs(app_id, labeled=True) if i not in held_out][:MAX_POOL]
        _, L = self._matrix(app_id, labeled_ids)
        pool_ids, X, proba = self._scores(app_id, model_id, version, pool_ids, X)
        concepts = model.concepts
        if not pool_ids:
            raise FailedPrecondition(f"app {app_id!r} has no unlabeled, indexed inputs to suggest")
        # Video frames: the strategy ranks 3x the batch, then frames of the same moment (same
        # video within 5 s, or cosine > 0.95) are thinned out, so a batch never asks for several
        # near-duplicates of one moment.
        has_frames = any(frames.parse_frame_input_id(i) for i in pool_ids)
        picked = strategies.select(
            strategy,
            proba=proba,
            embeddings=X,
            batch_size=min(size * 3 if has_frames else size, len(pool_ids)),
            seed=seed,
            labeled_embeddings=L if len(L) else None,
        )
        if has_frames:
            keep = set(diverse_batch.thin_near_duplicates(pool_ids, [s.index for s in picked], size, moment_of=frames.parse_frame_input_id, embeddings=X))
            picked = [s for s in picked if s.index in keep]
        out = [SuggestionOut(pool_ids[s.index], s.score, s.difficulty, concepts[int(proba[s.index].argmax())], float(proba[s.index].max())) for s in picked]
        number = 0
        if record_round:
            number = self._record(app_id, model, version, version_row, rows, strategy, len(out), len(pool_ids))
        return strategy, len(pool_ids), out, number

    def _record(self, app_id: str, model: ModelInfo, version: str, v: VersionInfo | None, rows: list[Row], strategy: str, n: int, pool: int) -> int:
        """One pool-based round in the experiment record: the version that suggested, the
        training labels it had, its validation metrics and its latest test-split evaluation."""
        from datetime import datetime

        if self.rounds is None:
            raise FailedPrecondition("this curation service has no experiment record")
        if v is None:
            raise FailedPrecondition(f"model {model.id!r} version {version!r} has no training record to log a round from")
        model_id = model.id
        concepts = set(model.concepts)
        total = sum(1 for r in rows if r.split == 1 and concepts & set(r.concepts))
        mine = [r for r in self.rounds.rounds(app_id) if r["model_id"] == model_id]  # newest first
        previous = mine[0] if mine else None
        metrics = {k: float(x) for k, x in v.validation_metrics.items()}
        metrics.update({f"test_{k}": float(x) for k, x in self.training.stored_test_metrics(app_id, model_id, version).items()})
        now = datetime.now(UTC).isoformat()
        record = {
            "app_id": app_id,
            "model_id": model_id,
            "strategy": strategy,
            "labels_spent": total - (previous["total_labels"] if previous else 0),
            "total_labels": total,
            "dataset_version": v.dataset_version,
            "previous_version": previous["candidate_version"] if previous else "",
            "candidate_version": str(version),
            "promoted": model.serving_version == str(version),
            "note": f"pool-based: suggested {n} of {pool} unlabeled inputs",
            "metrics": metrics,
            "previous_metrics": dict(previous["metrics"]) if previous else {},
            "status": "done",
            "started_at": now,
            "finished_at": now,
            "kind": "pool",  # stream rounds count queue labels; they leave these out of their totals
        }
        return int(self.rounds.add_round(app_id, record)["round"])

    def label_errors(self, app_id: str, concepts: Sequence[str], folds: int, max_results: int) -> tuple[int, list[tuple[str, str, str, float]]]:
        validation.app_id(app_id)
        folds = folds or 5
        if not 2 <= folds <= 20:
            raise InvalidArgument(f"folds must be between 2 and 20 (got {folds})")
        wanted = {validation.concept(c) for c in concepts}
        rows = [(i, cs[0]) for i, cs, _ in self.platform.inputs(app_id, labeled=True) if len(cs) == 1 and (not wanted or cs[0] in wanted)]
        counts: dict[str, int] = {}
        for _, c in rows:
            counts[c] = counts.get(c, 0) + 1
        keep = {c for c, n in counts.items() if n >= folds}
        rows = [(i, c) for i, c in rows if c in keep]
        if len(keep) < 2:
            raise FailedPrecondition(f"need at least two concepts with {folds} single-label inputs each")
        ids, X = self._matrix(app_id, [i for i, _ in rows])
        label_of = dict(rows)
        y = np.array([label_of[i] for i in ids])
        proba = label_errors.out_of_fold_proba(X, y, label_errors.transfer_fit_predict, folds=folds, seed=0)
        issues = label_errors.find_label_issues(proba, y)[: max_results or 100]
        return len(ids), [(ids[i.index], str(i.given_label), str(i.suggested_label), float(i.score)) for i in issues]

    def drift(self, app_id: str, reference_split: int, recent_count: int, recent_ids: Sequence[str]) -> tuple[drift.DriftReport, int, int]:
        validation.app_id(app_id)
        split = reference_split or 1
        everything = self.platform.inputs(app_id, labeled=None)
        reference = [i for i, _, s in everything if s == split]
        if recent_ids:
            recent = [validation.input_id(i) for i in recent_ids]
        else:
            n = recent_count or 200
            ref = set(reference)
            recent = [i for i, _, _ in everything if i not in ref][-n:]
        ref_ids, R = self._matrix(app_id, reference[-MAX_POOL:])
        rec_ids, N = self._matrix(app_id, recent)
        if len(ref_ids) < 2 or len(rec_ids) < 2:
            raise FailedPrecondition(f"need at least 2 reference and 2 recent indexed inputs (have {len(ref_ids)} and {len(rec_ids)})")
        return drift.drift_report(R, N), len(ref_ids), len(rec_ids)

    # -- data quality (curation.quality) -------------------------------------------------
    def _pixel_facts(self, app_id: str, ids: list[str]) -> tuple[dict[str, PixelFacts], list[str]]:
        """(facts by input id, ids whose bytes did not decode); inputs whose blob is missing are
        in neither."""
        from firstlight.curation.quality import crops
        from firstlight.curation.quality import duplicates as dup
        from firstlight.media import image_metrics, pixel_signature
        from firstlight.media.formats import open_image

        missing = [i for i in ids if (app_id, i) not in self._pixels]
        for i in ids:
            if (app_id, i) in self._pixels:
                self._pixels.move_to_end((app_id, i))
        # What ingestion measured on its decode is used as stored (the metrics are the figures the
        # listings filter on); only inputs stored before the metrics and signatures are fetched
        # and decoded here. A stored input decoded at upload, so it is not reported as corrupt
        # (a blob damaged since would be caught by the fallback only).
        stored = self.platform.stored_image_facts(app_id, missing) if missing else {}
        undecoded: list[str] = []
        for input_id in missing:
            s = stored.get(input_id)
            signature = pixel_signature.unpack(s.pixel_signature) if s is not None and s.quality is not None and s.pixel_signature else None
            if s is None or s.quality is None or signature is None:
                undecoded.append(input_id)
                continue
            self._pixels[(app_id, input_id)] = PixelFacts(s.sha256, signature[0], image_metrics.ImageQuality.from_dict(s.quality), signature[1])
        for start in range(0, len(undecoded), 64):
            chunk = undecoded[start : start + 64]
            for input_id, data in self.platform.blobs_of(app_id, chunk).items():
                try:
                    with open_image(data) as img:
                        img.draft("RGB", (1024, 1024))  # JPEG: decode at reduced size (metrics cap at 512 px)
                        rgb = np.asarray(img.convert("RGB"))
                except Exception:  # noqa: BLE001 - any decode failure is a corrupt image
                    self._pixels[(app_id, input_id)] = None
                    continue
                q = stored[input_id].quality if input_id in stored else None
                quality = image_metrics.ImageQuality.from_dict(q) if q is not None else image_metrics.image_quality(rgb)
                self._pixels[(app_id, input_id)] = PixelFacts(dup.content_hash(data), dup.thumbnail(rgb), quality, crops.canvas(rgb))
        facts = {i: self._pixels.get((app_id, i)) for i in ids}
        corrupt = [i for i, f in facts.items() if f is None and (app_id, i) in self._pixels]
        while len(self._pixels) > MAX_PIXEL_FACTS:
            self._pixels.popitem(last=False)
        return {i: f for i, f in facts.items() if f is not None}, corrupt

    def _pixel_kw(self, app_id: str, ids: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The detectors' pixel arguments for ``ids`` (content hashes, descriptors, canvases,
        metrics) and the ids that did not decode."""
        from firstlight.curation.quality import duplicates as dup
        from firstlight.media.image_metrics import ImageQuality

        facts, corrupt = self._pixel_facts(app_id, ids)
        # an input that did not decode: no content hash, a zero descriptor (correlates with
        # nothing), flat metrics (reported as corrupt, not as duplicates)
        none = ImageQuality(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0, 0, True, 1.0)
        blank_thumb = np.zeros((2, dup.THUMB_SIZE**2), np.float32)
        blank_canvas = np.zeros((32, 32), np.uint8)
        kw = {
            "content_hashes": [facts[i].sha256 if i in facts else "" for i in ids],
            "thumbnails": np.stack([facts[i].thumb if i in facts else blank_thumb for i in ids]),
            "canvases": np.stack([facts[i].canvas if i in facts else blank_canvas for i in ids]),
            "quality": [facts[i].quality if i in facts else none for i in ids],
        }
        return kw, corrupt

    def duplicate_groups(self, app_id: str, input_ids: Sequence[str], threshold: float = 0.0, images: bool = False) -> dict[str, Any]:
        """Exact and near-duplicate groups among ``input_ids`` by the health check's detector
        (``quality.health.duplicate_groups``); inputs not indexed are in no group."""
        from firstlight.curation.quality import duplicates as dup
        from firstlight.curation.quality import health

        validation.app_id(app_id)
        threshold = threshold or dup.DEFAULT_THRESHOLD
        if not 0.5 <= threshold <= 1.0:
            raise InvalidArgument(f"near_duplicate_threshold must be between 0.5 and 1 (got {threshold})")
        if not 0 < len(input_ids) <= MAX_POOL:
            raise InvalidArgument(f"input_ids must name 1 to {MAX_POOL} inputs (got {len(input_ids)})")
        wanted = list(dict.fromkeys(validation.input_id(i) for i in input_ids))
        ids, X = self._matrix(app_id, wanted)
        if len(ids) < 2:
            return {"groups": [], "examined": len(ids)}
        kw: dict[str, Any] = {}
        if images:
            try:
                kw = self._pixel_kw(app_id, ids)[0]
            except FailedPrecondition:  # no blob store here: the embeddings alone decide
                kw = {}
            kw.pop("quality", None)
        groups = health.duplicate_groups(X, threshold=threshold, **kw)
        return {"groups": [([ids[m] for m in g.members], ids[g.keep], g.kind, g.similarity) for g in groups], "examined": len(ids)}

    def health_check(
        self,
        app_id: str,
        dataset_id: str = "",
        dataset_version: str = "",
        images: bool = False,
        threshold: float = 0.0,
        max_examples: int = 0,
        group_key: str = "",
    ) -> dict[str, Any]:
        """The health report of an app's indexed inputs or of a dataset version (rows, splits and
        labels as frozen), with its details keyed by input id."""
        from firstlight.curation.quality import duplicates as dup
        from firstlight.curation.quality import health

        validation.app_id(app_id)
        threshold = threshold or dup.DEFAULT_THRESHOLD
        if not 0.5 <= threshold <= 1.0:
            raise InvalidArgument(f"near_duplicate_threshold must be between 0.5 and 1 (got {threshold})")
        top = max_examples or 20
        if not 0 < top <= 1000:
            raise InvalidArgument(f"max_examples must be between 1 and 1000 (got {max_examples})")
        if dataset_id:
            version = dataset_version or self.training.latest_dataset_version(app_id, dataset_id)
            if not version:
                raise NotFound(f"dataset {dataset_id!r} does not exist in app {app_id!r}")
            rows = [(r.input_id, list(r.concepts), int(r.split)) for r in self.training.dataset_rows(app_id, dataset_id, version)]
            if not rows:
                raise NotFound(f"dataset {dataset_id!r} has no version {version!r} in app {app_id!r}")
        else:
            rows = self.platform.inputs(app_id, labeled=None)
        rows = rows[-MAX_POOL:]
        ids, X = self._matrix(app_id, [i for i, _, _ in rows])
        if len(ids) < 2:
            raise FailedPrecondition(f"need at least 2 indexed inputs to check (have {len(ids)})")
        info = {i: (c, s) for i, c, s in rows}
        labels = [info[i][0][0] if len(info[i][0]) == 1 else "" for i in ids]
        split_of = [_SPLIT_NAMES.get(info[i][1], "") for i in ids]
        kw: dict = {}
        corrupt: list[str] = []
        if images:
            kw, corrupt = self._pixel_kw(app_id, ids)
        row = {i: k for k, i in enumerate(ids)}
        group_of = None
        if group_key:
            values = self.platform.metadata_values(app_id, group_key)
            group_of = [values.get(i, "") for i in ids]
        report, details = health.health_check(
            labels,
            embeddings=X,
            split_of=split_of if any(split_of) else None,
            threshold=threshold,
            corrupt=[row[i] for i in corrupt if i in row],
            group_of=group_of,
            **kw,
        )
        score = cast("np.ndarray | None", details.get("outlier_scores"))
        order = np.argsort(-score)[:top] if score is not None else np.zeros(0, dtype=int)
        issues = cast("list[list[str]]", details.get("image_issues") or [])
        groups = cast("list[Any]", details.get("duplicate_groups", []))
        quality = kw.get("quality") or []
        return {
            "status": report.status,
            "examined": len(ids),
            "checks": [(c.name, c.status, c.message, c.count, [ids[r] for r in c.rows[:top]]) for c in report.checks],
            "duplicate_groups": [([ids[m] for m in g.members], ids[g.keep], g.kind, g.similarity) for g in groups[:top]],
            "outliers": [(ids[int(r)], float(score[int(r)])) for r in order] if score is not None else [],
            "flagged_images": [(ids[r], quality[r].to_dict(), issues[r]) for r in range(len(issues)) if issues[r]][:top],
            "markdown": report.to_markdown(),
        }

    def keep_one(self, app_id: str, keep: str, drop: Sequence[str], threshold: float = 0.0) -> dict[str, Any]:
        """Keep ``keep`` and delete ``drop``, after checking again that nothing is lost: every
        input of ``drop`` must be grouped with ``keep`` by the duplicate detector run on these
        inputs alone (same bytes, or near at ``threshold`` from the embeddings and, where the
        blobs are readable, the tiny-image descriptors), and carry no concept ``keep`` lacks.
        All checked before anything is deleted."""
        from firstlight.curation.quality import duplicates as dup

        validation.app_id(app_id)
        keep = validation.input_id(keep)
        drop = [validation.input_id(i) for i in drop]
        if not 1 <= len(drop) <= 1000:
            raise InvalidArgument(f"drop must name 1 to 1000 inputs (got {len(drop)})")
        if keep in drop or len(set(drop)) != len(drop):
            raise InvalidArgument("drop must not repeat an input nor name the one kept")
        threshold = threshold or dup.DEFAULT_THRESHOLD
        if not 0.5 <= threshold <= 1.0:
            raise InvalidArgument(f"near_duplicate_threshold must be between 0.5 and 1 (got {threshold})")
        ids = [keep, *drop]
        labels = self.platform.labels_of(app_id, ids)
        unknown = [i for i in ids if i not in labels]
        if unknown:
            raise NotFound(f"no input {', '.join(map(repr, unknown[:5]))} in app {app_id!r}")
        found, X = self._matrix(app_id, ids)
        if len(found) < len(ids):
            missing = [i for i in ids if i not in set(found)]
            raise FailedPrecondition(f"not indexed yet (no embedding to compare): {', '.join(missing[:5])}")
        kw: dict[str, Any] = {}
        try:
            facts, _ = self._pixel_facts(app_id, ids)
        except FailedPrecondition:  # no blob store here: the embeddings alone decide
            facts = {}
        if len(facts) == len(ids):
            kw = {
                "content_hashes": [facts[i].sha256 for i in ids],
                "thumbnails": np.stack([facts[i].thumb for i in ids]),
                "canvases": np.stack([facts[i].canvas for i in ids]),
            }
        groups = dup.find_duplicates(n=len(ids), embeddings=X, threshold=threshold, k=min(10, len(ids) - 1), **kw)
        group = next((g for g in groups if 0 in g.members), None)
        members = set(group.members) if group else {0}
        strangers = [ids[r] for r in range(1, len(ids)) if r not in members]
        if strangers:
            raise FailedPrecondition(f"not duplicates of {keep!r} at cosine {threshold:g}, nothing deleted: {', '.join(strangers[:5])}")
        own = set(labels[keep])
        extra = {i: sorted(set(labels[i]) - own) for i in drop if set(labels[i]) - own}
        if extra:
            said = "; ".join(f"{i} has {', '.join(c)}" for i, c in list(extra.items())[:5])
            raise FailedPrecondition(f"{keep!r} lacks labels its duplicates carry, nothing deleted (label {keep!r} first): {said}")
        assert group is not None
        self.platform.delete_inputs(app_id, drop)
        for i in drop:
            self._pixels.pop((app_id, i), None)
        return {"kept": keep, "deleted": list(drop), "kind": group.kind, "similarity": group.similarity}

    def worst_slices(
        self,
        app_id: str,
        model_id: str,
        version: str,
        split: str = "",
        min_size: int = 0,
        limit: int = 0,
        rank_by: str = "",
        metadata_keys: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Slices of a split of the version's dataset where the head does worst: true concept,
        embedding cluster, input metadata values (``metadata_keys``, or the categorical keys
        chosen: ``quality.metadata_slices``) and (for inputs whose pixels were read by a health
        check) quartiles of brightness, contrast and blur; ranked by ``rank_by`` (brier by
        default, accuracy, f1)."""
        from firstlight.curation.quality import metadata_slices, slices
        from firstlight.media import image_metrics

        validation.app_id(app_id)
        asked = [validation.metadata_key(k) for k in metadata_keys]
        if len(asked) > metadata_slices.MAX_KEYS:
            raise InvalidArgument(f"metadata_keys names {len(asked)} keys, over the limit of {metadata_slices.MAX_KEYS}")
        if len(set(asked)) != len(asked):
            raise InvalidArgument("metadata_keys repeats a key")
        split = split or "validation"
        codes = {v: k for k, v in _SPLIT_NAMES.items()}
        if split not in ("validation", "test", "train"):
            raise InvalidArgument(f"split must be train, validation or test (got {split!r})")
        min_size = min_size or 20
        limit = limit or 20
        if min_size < 1 or not 0 < limit <= 1000:
            raise InvalidArgument("min_size must be ≥ 1 and limit between 1 and 1000")
        rank_by = rank_by or slices.DEFAULT_RANK_BY
        if rank_by not in slices.RANK_BY:
            raise InvalidArgument(f"rank_by must be one of {', '.join(slices.RANK_BY)} (got {rank_by!r})")
        model, version = self._model_version(app_id, model_id, version)
        v, rows = self._version_rows(app_id, model_id, version)
        if v is None:
            raise FailedPrecondition(f"model {model_id!r} version {version!r} has no training record (its dataset is unknown)")
        concepts = set(model.concepts)
        truth = {r.input_id: r.concepts[0] for r in rows if r.split == codes[split] and len(r.concepts) == 1 and r.concepts[0] in concepts}
        ids, X = self._matrix(app_id, sorted(truth))
        if ids:
            ids, X, proba = self._scores(app_id, model_id, version, ids, X)
        if not ids:
            raise FailedPrecondition(f"the {split} split of model {model_id!r} version {version} has no single-label, indexed inputs")
        pred = [model.concepts[int(k)] for k in proba.argmax(axis=1)]
        y = [truth[i] for i in ids]
        fields: dict[str, list[str]] = {}
        if len(ids) >= 2 * min_size:
            fields["cluster"] = slices.kmeans_clusters(X)
        maybe = [self._pixels.get((app_id, i)) for i in ids]
        facts = [f for f in maybe if f is not None]
        if len(facts) == len(maybe):
            for metric in ("brightness", "contrast", "blur"):
                fields[f"q_{metric}"] = image_metrics.buckets([getattr(f.quality, metric) for f in facts])
        found = self.platform.metadata_of(app_id, ids)
        metas = [found.get(i, {}) for i in ids]
        keys = asked or metadata_slices.choose_keys(metas, min_size=min_size)
        carried = metadata_slices.profile(metas)
        absent = [k for k in keys if k not in carried]
        if absent:
            raise InvalidArgument(f"no input of the {split} split scored carries metadata key {', '.join(map(repr, absent))}")
        fields.update(metadata_slices.metadata_fields(metas, keys))
        report = slices.rank_slices(y, pred, fields, proba=proba, concepts=model.concepts, rank_by=rank_by, min_size=min_size, limit=limit)
        out = []
        for s in report.slices:
            majority, share = "", 0.0
            if s.field == "cluster":
                members = [y[k] for k, c in enumerate(fields["cluster"]) if c == s.value]
                majority = max(set(members), key=members.count)
                share = members.count(majority) / len(members)
            out.append((s, majority, share))
        return {
            "version": str(version),
            "split": split,
            "count": len(ids),
            "overall": dict(report.overall),
            "rank_by": rank_by,
            "slices": out,
            "metadata_keys": list(keys),
        }

    def uniqueness(
        self, app_id: str, scope: str = "", order: str = "", concept: str = "", page_size: int = 0, page_token: str = "", per_concept: int = 0
    ) -> dict[str, Any]:
        """A page of the app's inputs by uniqueness (see :mod:`quality.uniqueness`) and, on the
        first page, each concept's representatives; over the app's most recent MAX_POOL indexed
        inputs."""
        import hashlib
        import json

        from firstlight.curation.quality import uniqueness
        from firstlight.domain import projection

        validation.app_id(app_id)
        scope, order = scope or "app", order or "unusual"
        if scope not in uniqueness.SCOPES:
            raise InvalidArgument(f"scope must be one of {', '.join(uniqueness.SCOPES)} (got {scope!r})")
        if order not in uniqueness.ORDERS:
            raise InvalidArgument(f"order must be one of {', '.join(uniqueness.ORDERS)} (got {order!r})")
        concept = validation.concept(concept) if concept else ""
        size = validation.page_size(page_size, default=100, maximum=MAX_UNIQUENESS_PAGE)
        if not 0 <= per_concept <= MAX_REPRESENTATIVES:
            raise InvalidArgument(f"per_concept must be between 0 and {MAX_REPRESENTATIVES} (got {per_concept})")
        rows = self.platform.inputs(app_id, labeled=None)[-MAX_POOL:]
        _, model = self.platform.index_state(app_id)
        digest = hashlib.sha256(json.dumps([model, [(i, sorted(c)) for i, c, _ in rows]]).encode()).hexdigest()[:32]
        # The token is bound to this listing: a page of another state of the app would skip or repeat rows.
        scope_key = json.dumps([app_id, digest, scope, order, concept])
        offset = validation.decode_page_token("uniqueness", page_token, scope_key)
        key = (app_id, digest, per_concept)
        scored = self._uniqueness.get(key)
        if scored is None:
            ids, X = self._matrix(app_id, [i for i, _, _ in rows])
            if len(ids) < 2:
                raise FailedPrecondition(f"need at least 2 indexed inputs to score uniqueness (have {len(ids)})")
            concepts_of = {i: c for i, c, _ in rows}
            scored = uniqueness.score(ids, [concepts_of[i] for i in ids], X, per_concept=per_concept)
            self._uniqueness.put(key, scored)
        listed = uniqueness.ranking(scored, scope, order, concept)
        start, end, nxt = projection.page_bounds(len(listed), offset, size)

        def one(r: int) -> dict[str, Any]:
            c = float(scored.concept[r])
            return {"input_id": scored.ids[r], "score": float(scored.app[r]), "concept_score": None if np.isnan(c) else c, "concepts": scored.concepts[r]}

        reps = {c: [one(r) for r in rs] for c, rs in scored.representatives.items() if not concept or c == concept} if offset == 0 else {}
        return {
            "inputs": [one(int(r)) for r in listed[start:end]],
            "next_page_token": validation.encode_page_token("uniqueness", nxt, scope_key) if nxt else "",
            "total_size": len(listed),
            "examined": len(scored.ids),
            "representatives": reps,
            "scope": scope,
            "order": order,
        }
