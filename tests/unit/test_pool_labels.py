"""Issue-16 leftovers on the scored pool: the gallery's prediction filters combine with the label
and split filters in one query (on the inputs' labels as curation records them: read with the
pool, then kept current by annotations.changed, newer revisions winning); the pool's labeling
source is leased like the stream queue; a scoring job cut by a restart is resumed."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from firstlight.curation.events import StreamHandlers
from firstlight.curation.leases import PoolSource, QueueLeases
from firstlight.curation.pool_scores import LabelFilter, PoolScoring
from firstlight.curation.ports import LabelState, Scores
from firstlight.curation.store import CurationStore
from firstlight.curation.stream import Prediction, StreamCuration, make_policy
from firstlight.errors import InvalidArgument, NotFound
from firstlight.messaging.bus import ParsedRecord
from firstlight.v1 import events_pb2

N = 40
IDS = [f"i{k:03d}" for k in range(N)]


def states() -> list[LabelState]:
    """Odd inputs unlabeled (no split); even ones "cat" (k % 4 == 0, train) or "dog" (validation)."""
    return [LabelState(i, () if k % 2 else ("cat",) if k % 4 == 0 else ("dog",), 0 if k % 2 else 1 if k % 4 == 0 else 2, 1) for k, i in enumerate(IDS)]


def curation(scores=None):  # type: ignore[no-untyped-def]
    """PoolScoring's ports: p(cat) = (k+1)/(N+1) for input k."""

    def default(app_id, model_id, version, batch):  # type: ignore[no-untyped-def]
        p = np.array([[(int(i[1:]) + 1) / (N + 1)] for i in batch], np.float32).reshape(-1, 1)
        return Scores(version, ["cat", "dog"], list(batch), np.hstack([p, 1 - p]))

    return SimpleNamespace(
        platform=SimpleNamespace(label_states=lambda app_id: states()),
        _model_version=lambda app_id, model_id, version: (None, version or "3"),
        training=SimpleNamespace(scores=scores or default),
    )


def finished(scoring: PoolScoring, job_id: str) -> dict:
    for _ in range(500):
        job = scoring.job("a", job_id)
        if job["state"] != "running":
            return job
        time.sleep(0.02)
    raise AssertionError("scoring did not finish")


@pytest.fixture
def scored(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = CurationStore(f"sqlite:///{tmp_path / 'c.db'}")
    scoring = PoolScoring(curation(), store)
    assert finished(scoring, scoring.start("a", "m", "", False)["id"])["state"] == "succeeded"
    return scoring, StreamCuration(store)


def ids(scoring: PoolScoring, labels: LabelFilter, concept: str = "", lo: float = 0.0, hi: float = 0.0, size: int = 7) -> list[str]:
    out, token = [], ""
    while True:
        rows, token, total, _ = scoring.predictions("a", "m", "", concept, lo, hi, "", size, token, labels)
        out += [r["input_id"] for r in rows]
        if not token:
            assert total == len(out)
            return sorted(out)


def test_prediction_filters_combine_with_label_and_split_filters(scored) -> None:  # type: ignore[no-untyped-def]
    scoring, stream = scored
    k = {i: int(i[1:]) for i in IDS}
    predicted_dog = {i for i in IDS if (k[i] + 1) / (N + 1) < 0.5}  # the first half
    assert ids(scoring, LabelFilter(labeled=False), "dog") == sorted(i for i in predicted_dog if k[i] % 2)
    assert ids(scoring, LabelFilter(("cat",)), "dog") == sorted(i for i in predicted_dog if k[i] % 4 == 0)
    assert ids(scoring, LabelFilter(("cat", "dog"), split=2), lo=0.3, hi=0.6) == sorted(
        i for i in IDS if k[i] % 4 == 2 and 0.3 <= max((k[i] + 1) / (N + 1), 1 - (k[i] + 1) / (N + 1)) <= 0.6
    )
    assert ids(scoring, LabelFilter(split=3)) == []
    # A label arrives (annotations.changed): the filters see it; an older state of it does not win.
    handlers = StreamHandlers(stream, SimpleNamespace(maybe_start=lambda app_id: None), None, None)  # type: ignore[arg-type]
    changed = [events_pb2.AnnotationsChanged(app_id="a", input_id="i001", concepts=c, split=s, label_revision=r) for c, s, r in ((["cat"], 3, 5), ([], 0, 4))]
    assert handlers.on_annotations([ParsedRecord(None, m, "annotations.changed", 0, n) for n, m in enumerate(changed)]) == [None, None]
    assert ids(scoring, LabelFilter(split=3)) == ["i001"] and "i001" not in ids(scoring, LabelFilter(labeled=False))
    stream.record_label_states([("a", LabelState("i001", (), 0, 2))])  # late and stale
    assert ids(scoring, LabelFilter(("cat",), split=3)) == ["i001"]
    # A token is bound to its label filter too.
    _, token, _, _ = scoring.predictions("a", "m", "", "", 0.0, 0.0, "", 5, "", LabelFilter(labeled=False))
    with pytest.raises(InvalidArgument):
        scoring.predictions("a", "m", "", "", 0.0, 0.0, "", 5, token, LabelFilter(labeled=True))
    with pytest.raises(InvalidArgument, match="unknown split 9"):
        scoring.predictions("a", "m", "", "", 0.0, 0.0, "", 5, "", LabelFilter(split=9))


def test_pool_items_are_leased_most_uncertain_first(scored) -> None:  # type: ignore[no-untyped-def]
    stream = scored[1]
    leases = QueueLeases(stream)
    pool = PoolSource("m")
    unlabeled = sorted((i for i in IDS if int(i[1:]) % 2), key=lambda i: (-(1 - abs(2 * (int(i[1:]) + 1) / (N + 1) - 1)), i))
    a, _, _ = leases.lease("a", "alice", 60, pool=pool)
    b, _, others = leases.lease("a", "bob", 60, pool=pool)
    assert (a["input_id"], b["input_id"], others) == (unlabeled[0], unlabeled[1], 1)
    assert (a["model_version"], a["predicted"], a["state"]) == ("3", "cat" if int(a["input_id"][1:]) >= N // 2 else "dog", 1)
    assert leases.lease("a", "alice", 60, pool=pool)[0]["input_id"] == a["input_id"]  # a reload: the same one
    # Alice labels hers and names it; the label event then ends her lease.
    nxt, _, _ = leases.lease("a", "alice", 60, exclude=[a["input_id"]], pool=PoolSource("m", "3"))
    assert nxt["input_id"] == unlabeled[2]
    stream.record_label_states([("a", LabelState(a["input_id"], ("cat",), 0, 2))])
    carol = [leases.lease("a", f"carol{n}", 60, pool=pool)[0]["input_id"] for n in range(3)]
    assert carol == unlabeled[3:6] and a["input_id"] not in carol  # labeled: never offered again
    assert leases.lease("a", "bob", 60)[0] is None  # the stream queue is another source (empty so far)
    # The stream queues predictions on any input, labeled ones too: such an item's lease holds.
    stream.set_policy(make_policy("a", "m"))
    stream.screen([Prediction("a", "m", "3", "i000", {"margin": 0.9}, "cat")])
    assert leases.lease("a", "bob", 60)[0]["input_id"] == "i000"
    leases.lease("a", "frank", 60, pool=pool)
    assert leases.lease("a", "bob", 60)[0]["input_id"] == "i000" and leases.lease("a", "gina", 60)[0] is None
    with pytest.raises(NotFound, match="has not scored the pool"):
        leases.lease("a", "bob", 60, pool=PoolSource("other"))


class Killed(BaseException):
    """The process died (not an error the job records)."""


def test_a_scoring_job_cut_by_a_restart_is_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CurationStore(f"sqlite:///{tmp_path / 'c.db'}")
    calls: list[list[str]] = []
    stop, stopped = threading.Event(), threading.Event()
    normal = curation().training.scores

    def dies_on_the_second_batch(app_id, model_id, version, batch):  # type: ignore[no-untyped-def]
        if batch:  # start() resolves the version with an empty call
            calls.append(list(batch))
        if len(calls) > 1:
            stopped.set()
            stop.wait(30)
            raise Killed
        return normal(app_id, model_id, version, batch)

    first = PoolScoring(curation(dies_on_the_second_batch), store)
    first_batch = 16
    monkeypatch.setattr("firstlight.curation.pool_scores.BATCH", first_batch)
    try:
        job = first.start("a", "m", "", False)
        assert stopped.wait(30)
        mid = first.job("a", job["id"])
        assert (mid["state"], mid["scored"], mid["total"], mid["resumed"]) == ("running", first_batch, N, False)
        # The next process: the job goes on with the inputs not scored yet.
        seen: list[str] = []
        second = PoolScoring(curation(lambda app_id, model_id, version, batch: (seen.extend(batch), normal(app_id, model_id, version, batch))[1]), store)
        assert second.resume_interrupted() == [job["id"]]
        done = finished(second, job["id"])
    finally:
        stop.set()
    assert (done["state"], done["scored"], done["total"], done["resumed"]) == ("succeeded", N, N, True)
    assert sorted(seen) == IDS[first_batch:]  # the first batch was kept, not scored again
    assert second.predictions("a", "m", "3", "", 0.0, 0.0, "", 100, "")[2] == N
    assert second.resume_interrupted() == []


def test_the_rpcs_map_the_label_filter_the_pool_source_and_resumed(tmp_path: Path) -> None:
    from firstlight.curation.servicer import CurationServicer
    from firstlight.v1 import common_pb2, curation_pb2

    servicer = CurationServicer(curation(), StreamCuration(CurationStore(f"sqlite:///{tmp_path / 'c.db'}")))  # type: ignore[arg-type]
    job = asyncio.run(servicer.ScorePool(curation_pb2.ScorePoolRequest(app_id="a", model_id="m"), None))
    assert finished(servicer.scoring, job.id)["state"] == "succeeded"  # type: ignore[arg-type]
    flt = common_pb2.InputFilter(labeled=common_pb2.LABELED_FILTER_UNLABELED, split=common_pb2.SPLIT_UNSPECIFIED)
    req = curation_pb2.ListPoolPredictionsRequest(app_id="a", model_id="m", order="uncertainty", page_size=100, filter=flt)
    unlabeled = asyncio.run(servicer.ListPoolPredictions(req, None))
    assert unlabeled.total_size == N // 2 and all(int(p.input_id[1:]) % 2 for p in unlabeled.predictions)
    leased = asyncio.run(servicer.LeaseQueueItem(curation_pb2.LeaseQueueItemRequest(app_id="a", holder="h", model_id="m"), None))
    assert (leased.item.input_id, leased.item.model_version) == (unlabeled.predictions[0].input_id, "3")
    got = asyncio.run(servicer.GetScoringJob(curation_pb2.GetScoringJobRequest(app_id="a", job_id=job.id), None))
    assert (got.state, got.resumed, got.progress) == ("succeeded", False, 1.0)
