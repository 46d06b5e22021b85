"""Stream-based selective sampling, human in the loop and stream drift (no grpc, no kafka).

- :meth:`StreamCuration.screen` takes the predictions the inference service published and puts
  the uncertain ones on the app's labeling queue under its policy (threshold on margin, entropy
  or least confidence; at most ``max_per_minute`` a minute and ``budget`` in all; an input once).
- :meth:`StreamCuration.on_labels` marks queued inputs labeled when their annotations change.
- :class:`Rounds` retrains after ``retrain_after_labels`` new queue labels: the policy's dataset
  is extended (validation frozen, new labels to train), the model trained through the training
  service, and the version promoted by the training service's rule only if it beats the serving
  one on validation; each round is recorded (strategy, labels spent, versions, metrics, verdict).
- :class:`StreamDrift` keeps a window of recent predictions per app model and compares it with
  the serving version's training split (``drift.drift_report``); an alert is returned once when
  the check turns from quiet to alert.

The Kafka side (consumers, DLQ, publishing) is in ``events``, the process in ``main``; the RPCs
in ``servicer``. Rounds reach the training service only through the
:class:`~firstlight.curation.ports.Training` port (its gRPC API in production).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from firstlight.curation import drift, input_labels
from firstlight.curation.ports import LabelState, Platform, Training
from firstlight.curation.store import LABELED, QUEUED, CurationStore, minute_ago
from firstlight.domain import validation
from firstlight.errors import FailedPrecondition, FirstlightError, InvalidArgument, NotFound

log = logging.getLogger(__name__)

UNCERTAINTY = ("margin", "entropy", "least_confidence")
PROMOTION_METRICS = ("accuracy", "macro_f1", "micro_f1", "macro_precision", "macro_recall", "macro_auc", "ece", "log_loss")
DEFAULT_THRESHOLD = 0.5
DEFAULT_DRIFT_WINDOW = 200
DRIFT_WINDOW_RANGE = (10, 5000)
MAX_REFERENCE = 2000  # training inputs kept per model for the stream drift check
#: App models with a drift window in memory (all apps): the least recently observed one is dropped
#: beyond this, with its reference (~10 MB at MAX_REFERENCE x 1280 floats), and refills from traffic.
MAX_DRIFT_MODELS = 64
#: Idempotency keys of screened predictions remembered (~100 bytes each): a redelivery (a batch
#: retried after a failed publish, or given back in a consumer-group rebalance) comes within a
#: batch or two, far inside this; one older than it, or after a restart, is counted again.
SEEN_PREDICTIONS = 50_000


@dataclass(frozen=True)
class Policy:
    app_id: str
    model_id: str
    strategy: str = "margin"
    threshold: float = DEFAULT_THRESHOLD
    max_per_minute: int = 0
    budget: int = 0
    retrain_after_labels: int = 0
    dataset_id: str = ""
    promotion_metric: str = "accuracy"
    promotion_min_gain: float = 0.0
    drift_window: int = DEFAULT_DRIFT_WINDOW  # -1: no drift check


def make_policy(
    app_id: str,
    model_id: str,
    *,
    strategy: str = "",
    threshold: float = 0.0,
    max_per_minute: int = 0,
    budget: int = 0,
    retrain_after_labels: int = 0,
    dataset_id: str = "",
    promotion_metric: str = "",
    promotion_min_gain: float = 0.0,
    drift_window: int = 0,
) -> Policy:
    """Validated policy with defaults filled in (proto3 zero values mean "default")."""
    validation.app_id(app_id)
    if not model_id:
        raise InvalidArgument("model_id is required: the policy screens one model's predictions")
    validation.input_id(model_id)
    strategy = strategy or "margin"
    if strategy not in UNCERTAINTY:
        raise InvalidArgument(f"unknown strategy {strategy!r} (stream screening uses: {', '.join(UNCERTAINTY)})")
    threshold = threshold or DEFAULT_THRESHOLD
    if not (math.isfinite(threshold) and 0.0 < threshold <= 1.0):
        raise InvalidArgument(f"threshold must be in (0, 1] (got {threshold})")
    for name, value in (("max_per_minute", max_per_minute), ("budget", budget), ("retrain_after_labels", retrain_after_labels)):
        if value < 0:
            raise InvalidArgument(f"{name} must not be negative (got {value})")
    if retrain_after_labels and not dataset_id:
        raise InvalidArgument("retrain_after_labels needs dataset_id: the dataset each round extends and trains on")
    if dataset_id:
        validation.input_id(dataset_id)
    promotion_metric = promotion_metric or "accuracy"
    if promotion_metric not in PROMOTION_METRICS:
        raise InvalidArgument(f"unknown promotion_metric {promotion_metric!r} (known: {', '.join(PROMOTION_METRICS)})")
    if not (math.isfinite(promotion_min_gain) and promotion_min_gain >= 0):
        raise InvalidArgument(f"promotion_min_gain must be a finite number >= 0 (got {promotion_min_gain})")
    drift_window = drift_window or DEFAULT_DRIFT_WINDOW
    if drift_window != -1 and not DRIFT_WINDOW_RANGE[0] <= drift_window <= DRIFT_WINDOW_RANGE[1]:
        raise InvalidArgument(f"drift_window must be -1 (off) or between {DRIFT_WINDOW_RANGE[0]} and {DRIFT_WINDOW_RANGE[1]} (got {drift_window})")
    return Policy(
        app_id,
        model_id,
        strategy,
        float(threshold),
        max_per_minute,
        budget,
        retrain_after_labels,
        dataset_id,
        promotion_metric,
        float(promotion_min_gain),
        drift_window,
    )


@dataclass(frozen=True)
class Prediction:
    """What curation reads from one ``predictions.made`` event."""

    app_id: str
    model_id: str
    model_version: str
    input_id: str
    uncertainty: dict[str, float]
    predicted: str
    predicted_index: int = 0
    embedding: np.ndarray | None = None
    #: The event's EventHeader.idempotency_key: a redelivered event is screened once.
    key: str = ""


@dataclass(frozen=True)
class QueuedItem:
    app_id: str
    input_id: str
    model_id: str
    model_version: str
    score: float
    strategy: str
    predicted: str


class StreamCuration:
    def __init__(self, store: CurationStore, clock: Callable[[], datetime] | None = None, seen_size: int = SEEN_PREDICTIONS) -> None:
        self.store = store
        self.clock = clock or (lambda: datetime.now(UTC))
        self._lock = store.write_lock  # one writer: the prediction and label consumers share the store
        self._policies: dict[str, Policy | None] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()  # bounded LRU of screened event keys
        self._seen_size = seen_size

    # -- policy -------------------------------------------------------------------------
    def set_policy(self, policy: Policy) -> Policy:
        self.store.set_policy(policy.app_id, asdict(policy))
        self._policies[policy.app_id] = policy
        return policy

    def policy(self, app_id: str) -> Policy | None:
        if app_id not in self._policies:
            stored = self.store.policy(app_id)
            self._policies[app_id] = Policy(**stored) if stored else None
        return self._policies[app_id]

    def get_policy(self, app_id: str) -> Policy:
        validation.app_id(app_id)
        policy = self.policy(app_id)
        if policy is None:
            raise NotFound(f"app {app_id!r} has no curation policy (set one with SetCurationPolicy)")
        return policy

    # -- screening ----------------------------------------------------------------------
    def screen(self, predictions: Sequence[Prediction]) -> list[QueuedItem]:
        """Queue the uncertain predictions under each app's policy. Returns the items whose
        ``labeling.queue`` event must be published: the newly queued ones and any earlier one
        whose event was not acknowledged (a redelivery after a failed publish).

        An event screened before (same idempotency key) is not screened or counted again: its
        first screening decided; only its queued item's unacknowledged event is returned again."""
        out: list[QueuedItem] = []
        returned: set[tuple[str, str]] = set()
        screened: dict[str, None] = {}  # keys screened in this batch, in order
        with self._lock:
            with self.store.engine.begin() as conn:
                now = self.clock()
                for p in predictions:
                    if p.key and (p.key in self._seen or p.key in screened):  # screened before, or earlier in this batch
                        if p.key in self._seen:
                            self._seen.move_to_end(p.key)
                        self._republish(conn, p, out, returned)
                        continue
                    if p.key:
                        screened[p.key] = None
                    self._screen_one(conn, p, now, out, returned)
            for key in screened:  # only once the counts are committed
                self._seen[key] = None
            while len(self._seen) > self._seen_size:
                self._seen.popitem(last=False)
        return out

    def _republish(self, conn: Any, p: Prediction, out: list[QueuedItem], returned: set[tuple[str, str]]) -> None:
        existing = self.store.get_item(conn, p.app_id, p.input_id) if p.input_id else None
        if existing is not None and not existing["published"] and (p.app_id, p.input_id) not in returned:
            returned.add((p.app_id, p.input_id))
            out.append(_item(existing))

    def _screen_one(self, conn: Any, p: Prediction, now: datetime, out: list[QueuedItem], returned: set[tuple[str, str]]) -> None:
        policy = self.policy(p.app_id)
        if policy is None or p.model_id != policy.model_id:
            return
        self.store.count(conn, p.app_id, "screened")
        score = float(p.uncertainty.get(policy.strategy, 0.0))
        if score < policy.threshold:
            self.store.count(conn, p.app_id, "below_threshold")
            return
        if not p.input_id:
            self.store.count(conn, p.app_id, "without_input_id")
            return
        existing = self.store.get_item(conn, p.app_id, p.input_id)
        if existing is not None:
            if not existing["published"] and (p.app_id, p.input_id) not in returned:
                returned.add((p.app_id, p.input_id))
                out.append(_item(existing))
            else:
                self.store.count(conn, p.app_id, "duplicates")
            return
        if policy.budget and self.store.total_queued(conn, p.app_id) >= policy.budget:
            self.store.count(conn, p.app_id, "skipped_budget")
            return
        if policy.max_per_minute and self.store.queued_since(conn, p.app_id, minute_ago(now)) >= policy.max_per_minute:
            self.store.count(conn, p.app_id, "skipped_rate")
            return
        row = self.store.add_item(
            conn,
            app_id=p.app_id,
            input_id=p.input_id,
            model_id=p.model_id,
            model_version=p.model_version,
            score=score,
            strategy=policy.strategy,
            predicted=p.predicted,
            queued_at=now,
        )
        out.append(_item(row))
        returned.add((p.app_id, p.input_id))

    def mark_published(self, items: Sequence[QueuedItem]) -> None:
        by_app: dict[str, list[str]] = {}
        for it in items:
            by_app.setdefault(it.app_id, []).append(it.input_id)
        for app_id, ids in by_app.items():
            self.store.mark_published(app_id, ids)

    # -- labels -------------------------------------------------------------------------
    def on_labels(self, changes: Sequence[tuple[str, str, Sequence[str]]]) -> set[str]:
        """(app, input, concepts now) per annotation change. Returns the apps whose queue got
        new labels (candidates for a retraining round)."""
        apps: set[str] = set()
        with self._lock, self.store.engine.begin() as conn:
            now = self.clock()
            for app_id, input_id, concepts in changes:
                if self.store.set_labels(conn, app_id, input_id, list(concepts), now):
                    apps.add(app_id)
        return apps

    def record_label_states(self, states: Sequence[tuple[str, LabelState]]) -> None:
        """(app, state) per annotation change: the inputs' labels as the filters see them."""
        by_app: dict[str, list[LabelState]] = {}
        for app_id, state in states:
            by_app.setdefault(app_id, []).append(state)
        with self._lock, self.store.engine.begin() as conn:
            for app_id, app_states in by_app.items():
                input_labels.record(conn, app_id, app_states)

    # -- reading ------------------------------------------------------------------------
    def queue(self, app_id: str, state: int, page_size: int, page_token: str) -> tuple[list[dict], str, dict[str, int]]:
        validation.app_id(app_id)
        if state not in (0, QUEUED, LABELED):
            raise InvalidArgument(f"unknown queue item state {state}")
        size = validation.page_size(page_size, default=100, maximum=1000)
        offset = validation.decode_page_token("queue", page_token, app_id)
        rows = self.store.items(app_id, state, offset, size + 1)
        token = validation.encode_page_token("queue", offset + size, app_id) if len(rows) > size else ""
        return rows[:size], token, self.store.counters(app_id)


def _item(row: dict) -> QueuedItem:
    return QueuedItem(row["app_id"], row["input_id"], row["model_id"], row["model_version"], float(row["score"]), row["strategy"], row["predicted"])


# -- rounds: retrain after N labels, promote only if better --------------------------------


TERMINAL_JOB_STATES = {3: "succeeded", 4: "failed", 5: "cancelled"}


class Rounds:
    def __init__(self, store: CurationStore, stream: StreamCuration, trainer: Training, *, job_timeout_s: float = 600.0, poll_s: float = 0.2) -> None:
        self.store = store
        self.stream = stream
        self.trainer = trainer
        self.job_timeout_s = job_timeout_s
        self.poll_s = poll_s
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="al-round")
        # The label consumer, SetCurationPolicy and a finishing round may all try to start one.
        self._start_lock = threading.Lock()

    def maybe_start(self, app_id: str) -> dict | None:
        """Start a round if the app's policy retrains and enough new labels wait; it runs on the
        round worker (never in a consumer or RPC thread)."""
        policy = self.stream.policy(app_id)
        if policy is None or not policy.retrain_after_labels:
            return None
        try:
            serving = self.trainer.model(app_id, policy.model_id).serving_version
        except NotFound:
            serving = ""
        except FirstlightError as exc:  # training unreachable: the labels wait for the next trigger
            log.warning("no round for %s now: the training service did not answer (%s)", app_id, exc)
            return None
        with self._start_lock, self.stream._lock:  # one writer at a time on the queue table (SQLite)
            record = self._start(app_id, policy, serving)
        if record is not None:
            self.pool.submit(self._run, policy, record)
        return record

    def _start(self, app_id: str, policy: Policy, serving: str) -> dict | None:
        return self.store.start_round(
            app_id,
            {
                "app_id": app_id,
                "model_id": policy.model_id,
                "strategy": f"stream:{policy.strategy}>={policy.threshold:g}",
                "dataset_version": "",
                "previous_version": serving,
                "candidate_version": "",
                "promoted": False,
                "note": "",
                "metrics": {},
                "previous_metrics": {},
                "started_at": self.stream.clock().isoformat(),
                "finished_at": "",
            },
            policy.retrain_after_labels,
        )

    def _run(self, policy: Policy, record: dict) -> None:
        try:
            record = self._train(policy, record)
        except Exception as exc:
            log.exception("active-learning round %s of %s failed", record["round"], policy.app_id)
            record = dict(record, status="failed", note=str(exc) or type(exc).__name__)
        record["finished_at"] = self.stream.clock().isoformat()
        self.store.save_round(policy.app_id, record)
        self.maybe_start(policy.app_id)  # labels that arrived meanwhile

    def _train(self, policy: Policy, record: dict) -> dict:
        app_id, model_id = policy.app_id, policy.model_id
        record = dict(record, dataset_version=self.trainer.extend_dataset(app_id, policy.dataset_id))
        self.store.save_round(app_id, record)
        job = self.trainer.train(app_id, model_id, policy.dataset_id, (policy.promotion_metric, policy.promotion_min_gain))
        deadline = time.monotonic() + self.job_timeout_s
        while job.state not in TERMINAL_JOB_STATES:
            if time.monotonic() > deadline:
                raise FailedPrecondition(f"training job {job.id} did not finish within {self.job_timeout_s:.0f}s")
            time.sleep(self.poll_s)
            job = self.trainer.job(app_id, job.id)
        if TERMINAL_JOB_STATES[job.state] != "succeeded":
            raise FailedPrecondition(f"training job {job.id} {TERMINAL_JOB_STATES[job.state]}: {job.error}")
        candidate = self.trainer.version(app_id, model_id, job.version)
        previous = self.trainer.version(app_id, model_id, record["previous_version"]) if record["previous_version"] else None
        serving_now = self.trainer.model(app_id, model_id).serving_version
        return dict(
            record,
            status="done",
            candidate_version=str(job.version),
            promoted=serving_now == str(job.version),
            note=candidate.promotion_note if candidate else "",
            metrics={k: float(v) for k, v in (candidate.validation_metrics if candidate else {}).items()},
            previous_metrics={k: float(v) for k, v in (previous.validation_metrics if previous else {}).items()},
        )

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def drift_reference(training: Training, platform: Platform) -> Callable[[str, str, str], tuple[np.ndarray, np.ndarray]]:
    """``reference(app, model, version)`` for :class:`StreamDrift`: the version's training-split
    embeddings and the concept index of each (from the training service's dataset rows and the
    stored vectors)."""

    def reference(app_id: str, model_id: str, version: str) -> tuple[np.ndarray, np.ndarray]:
        model = training.model(app_id, model_id)
        v = training.version(app_id, model_id, version) if version.isdigit() else None
        if v is None:
            raise NotFound(f"model {model_id!r} has no version {version!r}")
        index = {c: i for i, c in enumerate(model.concepts)}
        rows = [r for r in training.dataset_rows(app_id, v.dataset_id, v.dataset_version) if r.split == 1 and r.concepts and r.concepts[0] in index]
        vectors = platform.vectors(app_id, [r.input_id for r in rows])
        rows = [r for r in rows if r.input_id in vectors]
        if len(rows) < 2:
            raise FailedPrecondition(f"version {version} of {model_id!r} has fewer than 2 embedded training inputs")
        return np.stack([vectors[r.input_id] for r in rows]), np.array([index[r.concepts[0]] for r in rows])

    return reference


# -- drift over the prediction stream --------------------------------------------------------


@dataclass
class _Window:
    size: int
    version: str = ""
    embeddings: deque = field(default_factory=deque)
    predicted: deque = field(default_factory=deque)
    since_check: int = 0
    alerting: bool = False
    report: drift.DriftReport | None = None
    reference_count: int = 0


@dataclass(frozen=True)
class StreamDriftReport:
    app_id: str
    model_id: str
    model_version: str
    report: drift.DriftReport
    window: int
    reference_count: int


class StreamDrift:
    """A window of the latest predictions per (app, model), checked against the serving
    version's training split every ``check_every`` new predictions once the window is full.

    ``reference(app, model, version)`` returns (training embeddings [N, D], their concept indices
    [N]); it is cached per version. Windows live in memory: after a restart they refill from new
    traffic (the consumer group does not replay old predictions)."""

    def __init__(self, stream: StreamCuration, reference: Callable[[str, str, str], tuple[np.ndarray, np.ndarray]], check_every: int | None = None) -> None:
        self.stream = stream
        self.reference = reference
        self.check_every = check_every
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()  # least recently observed first
        self._refs: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        self.max_models = MAX_DRIFT_MODELS

    def _window_size(self, app_id: str, model_id: str) -> int:
        policy = self.stream.policy(app_id)
        if policy is not None and policy.model_id == model_id:
            return policy.drift_window
        return DEFAULT_DRIFT_WINDOW

    def observe(self, predictions: Sequence[Prediction]) -> list[StreamDriftReport]:
        """Add predictions; returns the reports that just turned to alert (publish those)."""
        alerts = []
        with self._lock:
            touched = []
            for p in predictions:
                if p.embedding is None or not len(p.embedding):
                    continue
                size = self._window_size(p.app_id, p.model_id)
                if size == -1:
                    continue
                w = self._windows.get((p.app_id, p.model_id))
                if w is None or w.size != size:
                    w = self._windows[(p.app_id, p.model_id)] = _Window(size)
                w.embeddings.append(np.asarray(p.embedding, dtype=np.float32))
                w.predicted.append(p.predicted_index)
                w.version = p.model_version
                while len(w.embeddings) > size:
                    w.embeddings.popleft()
                    w.predicted.popleft()
                w.since_check += 1
                self._windows.move_to_end((p.app_id, p.model_id))
                touched.append((p.app_id, p.model_id))
            while len(self._windows) > self.max_models:
                (app_id, model_id), _ = self._windows.popitem(last=False)
                for old in [k for k in self._refs if k[:2] == (app_id, model_id)]:
                    del self._refs[old]
                touched = [k for k in touched if k != (app_id, model_id)]
            for key in dict.fromkeys(touched):
                w = self._windows[key]
                every = self.check_every or max(w.size // 4, 5)
                if len(w.embeddings) < w.size or (w.report is not None and w.since_check < every):
                    continue
                r = self._check(key, w)
                if r is not None and r.report.alert and not w.alerting:
                    alerts.append(r)
                if r is not None:
                    w.alerting = r.report.alert
        return alerts

    def _ref(self, app_id: str, model_id: str, version: str) -> tuple[np.ndarray, np.ndarray]:
        key = (app_id, model_id, version)
        if key not in self._refs:
            for old in [k for k in self._refs if k[:2] == key[:2]]:  # one version per model in memory
                del self._refs[old]
            X, labels = self.reference(app_id, model_id, version)
            if len(X) > MAX_REFERENCE:  # the tests subsample anyway; bound the memory per model
                keep = np.sort(np.random.default_rng(0).choice(len(X), MAX_REFERENCE, replace=False))
                X, labels = X[keep], labels[keep]
            self._refs[key] = (X, labels)
        return self._refs[key]

    def _check(self, key: tuple[str, str], w: _Window) -> StreamDriftReport | None:
        try:
            ref, ref_pred = self._ref(key[0], key[1], w.version)
        except (NotFound, FailedPrecondition) as exc:
            log.info("no drift reference for %s/%s v%s: %s", key[0], key[1], w.version, exc)
            return None
        w.since_check = 0
        if len(ref) < 2:
            return None
        recent = np.stack(list(w.embeddings))
        try:
            w.report = drift.drift_report(ref, recent, ref_pred, np.asarray(list(w.predicted)))
        except ValueError as exc:  # e.g. the traffic's embedding size is not the reference's
            log.warning("drift check of %s/%s failed: %s", key[0], key[1], exc)
            return None
        w.reference_count = len(ref)
        return StreamDriftReport(key[0], key[1], w.version, w.report, len(recent), len(ref))

    def report(self, app_id: str, model_id: str) -> StreamDriftReport:
        """The latest check of this model's traffic, computed now if the window has data."""
        with self._lock:
            w = self._windows.get((app_id, model_id))
            if w is None or len(w.embeddings) < 2:
                have = 0 if w is None else len(w.embeddings)
                raise FailedPrecondition(f"model {model_id!r} of app {app_id!r} has {have} recent predictions with embeddings; need at least 2")
            if w.report is None or w.since_check:
                r = self._check((app_id, model_id), w)
                if r is None:
                    raise FailedPrecondition(f"model {model_id!r} version {w.version!r} has no training split to compare with")
                return r
            return StreamDriftReport(app_id, model_id, w.version, w.report, len(w.embeddings), w.reference_count)


__all__ = [
    "LABELED",
    "QUEUED",
    "Policy",
    "Prediction",
    "QueuedItem",
    "Rounds",
    "StreamCuration",
    "StreamDrift",
    "StreamDriftReport",
    "drift_reference",
    "make_policy",
]
