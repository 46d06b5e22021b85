"""The training core on in-memory fakes of its ports (store, peers, events, a template runner):
the one record/promote/announce path every template takes, cancellation, failures, restart
recovery, datasets. No database, broker, Triton or torch."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from training_doubles import RecordedEvents

from firstlight.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from firstlight.training.core import CANCELLED, FAILED, MAX_SCORED, QUEUED, RUNNING, SUCCEEDED, RowFilter, TrainingCore
from firstlight.training.ports import Candidate, Exported, JobProgressed, JobRun, Scores

CONCEPTS = ["cat", "dog"]


class FakeStore:
    """:class:`TrainingStorePort` in dicts."""

    def __init__(self) -> None:
        self.datasets: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.models: dict[tuple[str, str], dict[str, Any]] = {}
        self.versions: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.evaluations: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def save_dataset(self, app_id: str, dataset_id: str, version: str, spec: dict[str, Any], rows: list[Any]) -> datetime:
        now = datetime.now(UTC)
        self.datasets.setdefault((app_id, dataset_id), []).append(
            {"app_id": app_id, "id": dataset_id, "version": version, "spec": spec, "rows": list(rows), "created_at": now}
        )
        return now

    def set_dataset_health(self, app_id: str, dataset_id: str, version: str, health: dict[str, Any]) -> None:
        next(d for d in self.datasets[(app_id, dataset_id)] if d["version"] == version)["health"] = health

    def latest_dataset(self, app_id: str, dataset_id: str) -> dict[str, Any] | None:
        got = self.datasets.get((app_id, dataset_id))
        return {k: v for k, v in got[-1].items() if k != "rows"} if got else None

    def dataset_rows(self, app_id: str, dataset_id: str, version: str) -> list[Any]:
        return next((d["rows"] for d in self.datasets.get((app_id, dataset_id), []) if d["version"] == version), [])

    def has_dataset_version(self, app_id: str, dataset_id: str, version: str) -> bool:
        return any(d["version"] == version for d in self.datasets.get((app_id, dataset_id), []))

    def dataset_rows_page(self, app_id: str, dataset_id: str, version: str, offset: int, limit: int | None, **flt: Any) -> tuple[list[Any], int]:
        assert flt == {"concepts": (), "split": 0, "labeled": None}  # the filters: test_dataset_rows_pages, on the real store
        rows = self.dataset_rows(app_id, dataset_id, version)
        return rows[offset : None if limit is None else offset + limit], len(rows)

    def insert_model(self, app_id: str, model_id: str, template: str, concepts: list[str], settings: dict[str, Any]) -> dict[str, Any]:
        m = {"app_id": app_id, "id": model_id, "template": template, "concepts": concepts, "settings": settings, "serving_version": ""}
        self.models[(app_id, model_id)] = m
        return dict(m)

    def get_model(self, app_id: str, model_id: str) -> dict[str, Any] | None:
        m = self.models.get((app_id, model_id))
        return dict(m) if m else None

    def set_serving(self, app_id: str, model_id: str, version: str) -> None:
        self.models[(app_id, model_id)]["serving_version"] = version

    def next_version(self, app_id: str, model_id: str) -> int:
        return max(self.versions.get((app_id, model_id), {0: {}})) + 1

    def insert_version(self, **values: Any) -> None:
        self.versions.setdefault((values["app_id"], values["model_id"]), {})[values["version"]] = dict(values)

    def list_versions(self, app_id: str, model_id: str) -> list[dict[str, Any]]:
        return [self.versions[(app_id, model_id)][v] for v in sorted(self.versions.get((app_id, model_id), {}))]

    def get_version(self, app_id: str, model_id: str, version: int) -> dict[str, Any] | None:
        return self.versions.get((app_id, model_id), {}).get(version)

    def insert_job(self, job_id: str, app_id: str, model_id: str, dataset_id: str, settings: dict[str, Any], state: int) -> None:
        self.jobs[job_id] = {
            "id": job_id, "app_id": app_id, "model_id": model_id, "dataset_id": dataset_id, "settings": settings,
            "state": state, "version": "", "error": "", "progress": 0.0, "cancel_requested": False,
        }  # fmt: skip

    def update_job(self, job_id: str, **values: Any) -> None:
        with self.lock:
            self.jobs[job_id].update(values)

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        with self.lock:
            job = self.jobs.get(job_id)
            return dict(job) if job else None

    def jobs_in_states(self, states: list[int]) -> list[dict[str, Any]]:
        return [dict(j) for j in self.jobs.values() if j["state"] in states]

    def save_evaluation(self, *args: Any) -> None:
        self.evaluations.append(args)

    def get_evaluation(self, app_id: str, model_id: str, version: int, split: int) -> dict[str, Any] | None:
        got = [e[4] for e in self.evaluations if e[:4] == (app_id, model_id, version, split)]
        return got[-1] if got else None


class FakePeers:
    def __init__(self, n: int = 20) -> None:
        self.items = [(f"i{k}", [CONCEPTS[k % 2]], []) for k in range(n)]
        self.written: dict[str, int] = {}

    def labeled_inputs(self, app_id: str, concepts: Sequence[str]) -> list[tuple[str, list[str], list[Any]]]:
        return [(i, list(cs), list(b)) for i, cs, b in self.items]

    def inputs(self, app_id: str, *, labeled: bool | None, split: int = 0) -> list[tuple[str, list[str], int]]:
        return [(i, list(cs), 0) for i, cs, _ in self.items]

    def write_splits(self, app_id: str, splits_by_input: dict[str, int]) -> None:
        self.written.update(splits_by_input)

    def vectors_of(self, app_id: str, input_ids: Sequence[str]) -> tuple[dict[str, np.ndarray], str]:
        return {i: np.zeros(4, np.float32) for i in input_ids}, ""

    def flipped_vectors(self, app_id: str, input_ids: Sequence[str], model: str = "") -> dict[str, np.ndarray]:
        raise AssertionError("not used")

    def images(self, app_id: str, input_ids: Sequence[str], short_side: int = 0) -> dict[str, np.ndarray]:
        raise AssertionError("not used")

    def regions(self, app_id: str, input_ids: Sequence[str]) -> dict[str, list[Any]]:
        raise AssertionError("not used")


class FakeRunner:
    """A template whose next candidates' metrics the test sets; ``gate`` holds a job mid-run."""

    def __init__(self, templates: tuple[str, ...], primary: str, *, resumable: bool = False, progress_events: bool = False) -> None:
        self.templates = templates
        self.primary = primary
        self.resumable = resumable
        self.progress_events = progress_events
        self.metrics: list[dict[str, float]] = []
        self.fail: Exception | None = None
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.exported: list[int] = []

    def parse(self, template: str, settings: dict[str, str]) -> object:
        if "bad" in settings:
            raise InvalidArgument("setting 'bad': unknown")
        return dict(settings)

    def train(self, run: JobRun) -> Candidate:
        run.step("fitting", 0.3, message=f"{len(run.rows)} rows")
        self.started.set()
        if self.gate is not None:
            while not self.gate.wait(0.01):
                run.check_cancelled()
        run.epoch(0.5, JobProgressed(run.job["app_id"], run.job["id"], run.job["model_id"], RUNNING, epoch=1, num_epochs=1, loss=0.5))
        run.check_cancelled()
        if self.fail is not None:
            raise self.fail
        metrics = self.metrics.pop(0)

        def export(version: int) -> Exported:
            self.exported.append(version)
            return Exported(f"fl.{run.job['app_id']}.{run.job['model_id']}", {"fit": {"v": version}})

        return Candidate(dict(metrics), dict(metrics), self.primary, 1.0, "softmax", export, kind="detector")

    def evaluate(self, app_id: str, model: dict[str, Any], version: dict[str, Any], rows: list[Any]) -> Any:
        raise AssertionError("not used")

    def head(self, model: dict[str, Any], version: dict[str, Any]) -> tuple[Any, str]:
        from firstlight.domain.heads import LinearHead

        if self.resumable:
            raise FailedPrecondition("not a head")
        return LinearHead(concepts=list(model["concepts"]), W=np.ones((2, 4)), b=np.zeros(2)), ""

    def score(self, app_id: str, model: dict[str, Any], version: dict[str, Any], input_ids: list[str]) -> Scores:
        if self.resumable:
            raise FailedPrecondition("not a head")
        kept = [i for i in input_ids if i != "unembedded"]
        return Scores(kept, np.full((len(kept), len(model["concepts"])), 0.5, np.float32), "softmax")


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.store, self.peers, self.events = FakeStore(), FakePeers(), RecordedEvents()
        self.heads = FakeRunner(("head_template",), "accuracy")
        self.deep = FakeRunner(("deep_template",), "map_50", resumable=True, progress_events=True)
        self.core = self.build(tmp_path)
        self.core.create_dataset("app", "d", fractions=(0.5, 0.5, 0.0), seed=1)

    def build(self, tmp_path: Path) -> TrainingCore:
        return TrainingCore(self.store, self.peers, self.events, [self.heads, self.deep], tmp_path / "jobs", workers=1)

    def wait(self, job_id: str, states: Sequence[int] = (SUCCEEDED, FAILED, CANCELLED)) -> dict[str, Any]:
        seen = 0
        deadline = time.monotonic() + 120  # a bound for a stuck worker, not a timing assertion
        while time.monotonic() < deadline:
            seen += len(self.core.log.wait_after(job_id, seen, 0.05))
            job = self.core.job(job_id)
            if job["state"] in states:
                self.core.pool.submit(lambda: None).result()  # one worker: the job's _run has returned
                return job
        raise AssertionError(f"job {job_id} still {self.core.job(job_id)}")


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    w = World(tmp_path)
    yield w
    w.core.shutdown()


@pytest.mark.parametrize("template", ["head_template", "deep_template"])
def test_every_template_takes_the_one_record_and_promotion_path(world: World, template: str) -> None:
    runner = world.heads if template == "head_template" else world.deep
    metric = runner.primary
    world.core.create_model("app", "m", template, CONCEPTS, {})
    runner.metrics = [{metric: 0.6}, {metric: 0.5}, {metric: 0.7}]
    first = world.wait(world.core.train("app", "m", "d", {})["id"])
    second = world.wait(world.core.train("app", "m", "d", {})["id"])
    third = world.wait(world.core.train("app", "m", "d", {}, promotion=("accuracy", 0.2))["id"])
    assert [j["state"] for j in (first, second, third)] == [SUCCEEDED] * 3
    assert [j["version"] for j in (first, second, third)] == ["1", "2", "3"] and runner.exported == [1, 2, 3]
    v = {n: world.store.get_version("app", "m", n) for n in (1, 2, 3)}
    assert v[1]["promotion_note"].startswith("promoted: no version is serving yet")  # type: ignore[index]
    assert v[2]["promotion_note"].startswith(f"kept the serving version: {metric}")  # type: ignore[index]
    assert "vs serving v1" in v[2]["promotion_note"]  # type: ignore[index]
    # the policy's min gain (0.2 on accuracy, or on the primary metric where accuracy is not reported)
    assert "not more than min_gain 0.2" in v[3]["promotion_note"]  # type: ignore[index]
    assert world.core.model("app", "m")["serving_version"] == "1"
    assert [(e.version, e.serving) for e in world.events.ready] == [("1", True), ("2", False), ("3", False)]
    assert v[1]["train_report"] == {"fit": {"v": 1}} and v[1]["validation_metrics"] == {metric: 0.6}  # type: ignore[index]
    ends = [e for e in world.events.progress if not e.epoch]
    epochs = [e for e in world.events.progress if e.epoch]
    assert len(epochs) == 3  # every epoch row goes to the publisher
    assert [e.state for e in ends] == ([SUCCEEDED] * 3 if runner.progress_events else [])


def test_a_cancel_while_running_ends_cancelled_and_records_no_version(world: World) -> None:
    world.core.create_model("app", "m", "deep_template", CONCEPTS, {})
    world.deep.gate = threading.Event()
    job = world.core.train("app", "m", "d", {})
    assert world.deep.started.wait(30)
    world.core.cancel(job["id"])
    done = world.wait(job["id"])
    assert done["state"] == CANCELLED and done["version"] == ""
    assert world.store.list_versions("app", "m") == [] and world.events.ready == []
    assert world.events.progress[-1].state == CANCELLED
    with pytest.raises(FailedPrecondition, match="already ended"):
        world.core.cancel(job["id"])


def test_a_failed_job_says_why(world: World) -> None:
    world.core.create_model("app", "m", "head_template", CONCEPTS, {})
    world.heads.fail = FailedPrecondition("3 inputs are not embedded yet")
    done = world.wait(world.core.train("app", "m", "d", {})["id"])
    assert done["state"] == FAILED and done["error"] == "3 inputs are not embedded yet"
    world.heads.fail = RuntimeError("boom")
    done = world.wait(world.core.train("app", "m", "d", {})["id"])
    assert done["error"] == "RuntimeError: boom"


def test_requests_are_checked_before_a_job_is_queued(world: World) -> None:
    with pytest.raises(InvalidArgument, match="unknown template"):
        world.core.create_model("app", "m", "nope", CONCEPTS, {})
    with pytest.raises(InvalidArgument, match="at least two concepts"):
        world.core.create_model("app", "m", "head_template", ["cat"], {})
    with pytest.raises(InvalidArgument, match="bad"):
        world.core.create_model("app", "m", "head_template", CONCEPTS, {"bad": "1"})
    world.core.create_model("app", "m", "head_template", CONCEPTS, {})
    with pytest.raises(InvalidArgument, match="unknown promotion metric"):
        world.core.train("app", "m", "d", {}, promotion=("nope", 0.0))
    with pytest.raises(InvalidArgument, match="min_gain"):
        world.core.train("app", "m", "d", {}, promotion=("accuracy", -1.0))
    with pytest.raises(NotFound):
        world.core.train("app", "m", "missing", {})
    world.core.create_model("app", "x", "head_template", ["cat", "bird"], {})
    with pytest.raises(FailedPrecondition, match="'bird' has no labeled inputs"):
        world.core.train("app", "x", "d", {})
    assert world.store.jobs == {}


def test_restart_recovery_resumes_deep_jobs_and_fails_head_jobs(world: World, tmp_path: Path) -> None:
    world.core.create_model("app", "h", "head_template", CONCEPTS, {})
    world.core.create_model("app", "g", "deep_template", CONCEPTS, {})
    world.store.insert_job("j-head", "app", "h", "d", {}, RUNNING)
    world.store.insert_job("j-deep", "app", "g", "d", {}, QUEUED)
    world.store.insert_job("j-cancelled", "app", "g", "d", {}, RUNNING)
    world.store.update_job("j-cancelled", cancel_requested=True)
    world.deep.metrics = [{"map_50": 0.4}]
    world.core.recover_interrupted_jobs()
    assert world.wait("j-deep")["state"] == SUCCEEDED
    assert world.store.get_job("j-head")["state"] == FAILED  # type: ignore[index]
    assert "restarted" in world.store.get_job("j-head")["error"]  # type: ignore[index]
    assert world.store.get_job("j-cancelled")["state"] == CANCELLED  # type: ignore[index]


def test_datasets_are_stratified_versioned_and_written_back(world: World) -> None:
    ds = world.core.create_dataset("app", "w", fractions=(0.5, 0.5, 0.0), seed=2, write_back=True)
    assert {r.split for r in ds["rows"]} == {1, 2} and world.peers.written == {r.input_id: r.split for r in ds["rows"]}
    again = world.core.create_dataset("app", "w2", fractions=(0.5, 0.5, 0.0), seed=2)
    assert again["version"] == ds["version"]  # same rows, same splits: the same version id
    world.peers.items.append(("new", ["cat"], []))
    extended = world.core.extend_dataset("app", "w")
    old = {r.input_id: r.split for r in ds["rows"]}
    assert all(old[r.input_id] == r.split for r in extended["rows"] if r.input_id in old)
    assert next(r.split for r in extended["rows"] if r.input_id == "new") == 1
    with pytest.raises(InvalidArgument):
        world.core.get_dataset("app", "../etc")


def test_what_the_curation_service_reads(world: World) -> None:
    world.core.create_model("app", "m", "head_template", CONCEPTS, {})
    world.heads.metrics = [{"accuracy": 0.5}]
    world.wait(world.core.train("app", "m", "d", {})["id"])
    scored = world.core.score_inputs("app", "m", "", ["i1", "unembedded"])
    assert (scored["version"], scored["concepts"], scored["input_ids"], scored["proba"].shape) == ("1", CONCEPTS, ["i1"], (1, 2))
    with pytest.raises(InvalidArgument, match="at most"):
        world.core.score_inputs("app", "m", "", ["i1"] * (MAX_SCORED + 1))
    world.core.create_model("app", "g", "deep_template", CONCEPTS, {})
    world.deep.metrics = [{"map_50": 0.5}]
    world.wait(world.core.train("app", "g", "d", {})["id"])
    with pytest.raises(FailedPrecondition, match="not a head"):
        world.core.score_inputs("app", "g", "1", ["i1"])
    with pytest.raises(FailedPrecondition, match="not a head"):
        world.core.head_weights("app", "g", "1")
    head = world.core.head_weights("app", "m", "")
    assert (head["version"], head["template"], head["concepts"], head["W"].shape, head["activation"]) == ("1", "head_template", CONCEPTS, (2, 4), "softmax")
    with pytest.raises(NotFound):
        world.core.head_weights("app", "m", "7")
    whole = world.core.dataset_rows_page("app", "d", "", 0, "", RowFilter())
    assert world.core.dataset_rows_page("app", "d", whole.version, 0, "", RowFilter()) == whole
    assert len(whole.rows) == whole.total == 20 and not whole.next_token  # page size 0: the whole version
    with pytest.raises(NotFound):
        world.core.dataset_rows_page("app", "d", "ds-nope", 0, "", RowFilter())
    with pytest.raises(NotFound, match="no stored evaluation"):
        world.core.stored_evaluation("app", "m", "1", 2)


def test_the_core_and_the_domain_package_import_no_transport() -> None:
    code = (
        "import sys, firstlight.training.core, firstlight.domain.evaluation, firstlight.domain.promotion, "
        "firstlight.domain.splits, firstlight.domain.validation, firstlight.domain.heads\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'confluent_kafka', 'aiokafka', 'tritonclient', "
        "'qdrant_client', 'torch', 'sqlalchemy') or m.startswith(('firstlight.v1', 'firstlight.messaging', "
        "'firstlight.runtime', 'firstlight.clients', 'firstlight.ingestion', 'firstlight.search', 'firstlight.curation')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_head_runner_scores_stored_embeddings_with_the_exported_head(tmp_path: Path) -> None:
    from firstlight.domain.heads import LinearHead
    from firstlight.training.head_jobs import HeadRunner

    class Repository:
        root = tmp_path

        def load_head(self, triton_model: str, version: int | str, concepts: list[str]) -> LinearHead:
            if str(version) != "1":
                raise FileNotFoundError(triton_model)
            return LinearHead(concepts=list(concepts), W=np.eye(2, 4), b=np.zeros(2), kind="sigmoid")

    runner = HeadRunner(FakePeers(), Repository())  # type: ignore[arg-type]
    model = {"id": "m", "concepts": CONCEPTS}
    got = runner.score("app", model, {"triton_model": "fl.app.m", "version": 1}, ["i1", "i2"])
    assert got.input_ids == ["i1", "i2"] and got.proba.shape == (2, 2) and got.activation == "sigmoid"
    with pytest.raises(FailedPrecondition, match="no exported head"):
        runner.score("app", model, {"triton_model": "fl.app.m", "version": 2}, ["i1"])
    head, embedder = runner.head(model, {"triton_model": "fl.app.m", "version": 1, "train_report": {"embedding_model": "emb@2"}})
    assert head.W.shape == (2, 4) and embedder == "emb@2"
    with pytest.raises(FailedPrecondition, match="no exported head"):
        runner.head(model, {"triton_model": "fl.app.m", "version": 2, "train_report": {}})


def test_frames_of_one_video_stay_in_one_split(world: World) -> None:
    # 6 videos x 4 frames (ids <video>.t<ms>), every video showing both concepts, plus 4 images
    world.peers.items[:] = [
        (f"v{v}.t{t * 1000:010d}", [CONCEPTS[t % 2]], []) for v in range(6) for t in range(4)
    ] + [(f"img{i}", [CONCEPTS[i % 2]], []) for i in range(4)]  # fmt: skip
    ds = world.core.create_dataset("app", "frames", fractions=(0.5, 0.25, 0.25), seed=3)
    split_of_video: dict[str, set[int]] = {}
    for r in ds["rows"]:
        if ".t" in r.input_id:
            split_of_video.setdefault(r.input_id.split(".t")[0], set()).add(r.split)
    assert len(split_of_video) == 6 and all(len(s) == 1 for s in split_of_video.values())
    assert {r.split for r in ds["rows"]} == {1, 2, 3} and len(ds["rows"]) == 28


class FakeHealth:
    """The curation service's health check of a dataset version: fails on leaks, or cannot run."""

    def __init__(self) -> None:
        self.status = "fail"
        self.calls: list[tuple[str, str, str]] = []

    def dataset_health(self, app_id: str, dataset_id: str, version: str) -> dict[str, Any]:
        self.calls.append((app_id, dataset_id, version))
        if self.status == "down":
            raise FailedPrecondition("the curation service's peer clients are not started yet")
        checks = [{"name": "leaks", "status": self.status, "message": "3 inputs have a copy in another split", "count": 3}]
        return {"status": self.status, "checks": checks}


def test_a_frozen_version_records_its_health_check_and_training_warns_or_refuses(world: World, tmp_path: Path) -> None:
    health = FakeHealth()
    core = TrainingCore(world.store, world.peers, world.events, [world.heads], tmp_path / "jobs2", workers=1, health=health)
    try:
        ds = core.create_dataset("app", "h", fractions=(0.5, 0.5, 0.0), seed=1)
        assert health.calls == [("app", "h", ds["version"])] and ds["health"]["status"] == "fail"
        assert core.get_dataset("app", "h")["health"]["checks"][0]["name"] == "leaks"  # recorded with the version
        core.create_model("app", "m", "head_template", CONCEPTS, {})
        with pytest.raises(FailedPrecondition, match=r"fails its health check \(leaks: 3 inputs"):
            core.train("app", "m", "h", {}, require_passing_check=True)
        job = core.train("app", "m", "h", {})  # by default: trained, with the warning first
        assert "fails its health check" in core.log.wait_after(job["id"], 0, 0.0)[0].message
        health.status = "down"  # the check cannot run: the freeze goes on, recorded as skipped
        world.peers.items.append(("late", [CONCEPTS[0]], []))
        ds = core.create_dataset("app", "h", fractions=(0.5, 0.5, 0.0), seed=1)
        assert ds["health"]["status"] == "skip" and "not started" in ds["health"]["error"]
        core.train("app", "m", "h", {}, require_passing_check=True)  # a skipped check refuses nothing
    finally:
        core.shutdown()


class FakeDuplicates(FakeHealth):
    """The curation service's duplicate groups (given), its health check passing, or unreachable."""

    def __init__(self, groups: list[list[str]]) -> None:
        super().__init__()
        self.status = "pass"
        self.groups = groups
        self.asked: list[list[str]] = []

    def duplicate_groups(self, app_id: str, input_ids: Sequence[str]) -> list[list[str]]:
        self.asked.append(list(input_ids))
        if self.status == "down":
            raise Unavailable("failed to connect to all addresses")
        return [list(g) for g in self.groups]


@pytest.mark.parametrize("seed", range(4))
def test_group_duplicates_keeps_copies_and_video_frames_in_one_split(world: World, tmp_path: Path, seed: int) -> None:
    # 3 videos x 4 frames and 36 images; copies: image pairs, a chain of three, an image that
    # copies a frame (joins its video), and a frame of v1 that copies one of v2 (one group)
    world.peers.items[:] = [
        (f"v{v}.t{t * 1000:010d}", [CONCEPTS[t % 2]], []) for v in range(3) for t in range(4)
    ] + [(f"img{i}", [CONCEPTS[i % 2]], []) for i in range(36)]  # fmt: skip
    groups = [[f"img{2 * k}", f"img{2 * k + 1}"] for k in range(8)] + [["img20", "img21"], ["img21", "img22"]]
    groups += [["img30", "v0.t0000001000"], ["v1.t0000000000", "v2.t0000003000"], ["img31", "not-in-the-dataset"]]
    dups = FakeDuplicates(groups)
    core = TrainingCore(world.store, world.peers, world.events, [world.heads], tmp_path / "jobs2", workers=1, health=dups)
    try:
        ds = core.create_dataset("app", "g", fractions=(0.5, 0.25, 0.25), seed=seed, group_duplicates=True)
        assert sorted(dups.asked[0]) == sorted(i for i, _, _ in world.peers.items)
        split = {r.input_id: r.split for r in ds["rows"]}
        together = [[f"img{2 * k}", f"img{2 * k + 1}"] for k in range(8)] + [["img20", "img21", "img22"]]
        together += [["img30", *(f"v0.t{t * 1000:010d}" for t in range(4))]]
        together += [[f"v{v}.t{t * 1000:010d}" for v in (1, 2) for t in range(4)]]
        for members in together:
            assert len({split[i] for i in members}) == 1, members
        assert len(split) == 48 and set(split.values()) == {1, 2, 3}
        assert core.get_dataset("app", "g")["spec"]["group_duplicates"] is True
    finally:
        core.shutdown()


def test_extending_a_grouped_version_puts_new_copies_of_held_out_inputs_in_their_split(world: World, tmp_path: Path) -> None:
    world.peers.items[:] = [(f"img{i}", [CONCEPTS[i % 2]], []) for i in range(20)]
    dups = FakeDuplicates([])
    core = TrainingCore(world.store, world.peers, world.events, [world.heads], tmp_path / "jobs2", workers=1, health=dups)
    try:
        ds = core.create_dataset("app", "x", fractions=(0.5, 0.25, 0.25), seed=0, group_duplicates=True)
        split = {r.input_id: r.split for r in ds["rows"]}
        held = next(i for i, s in split.items() if s == 3)
        trained = next(i for i, s in split.items() if s == 1)
        # new: a copy of a test input, a copy of a train input, an unrelated input
        world.peers.items += [("copy-held", [CONCEPTS[0]], []), ("copy-train", [CONCEPTS[0]], []), ("fresh", [CONCEPTS[1]], [])]
        dups.groups = [[held, "copy-held"], [trained, "copy-train"]]
        ext = {r.input_id: r.split for r in core.extend_dataset("app", "x")["rows"]}
        assert ext["copy-held"] == 3 and ext["copy-train"] == 1 and ext["fresh"] == 1
        assert all(ext[i] == s for i, s in split.items())  # the old rows keep their splits
        dups.status = "down"  # the groups are needed: nothing extended without them
        world.peers.items.append(("later", [CONCEPTS[0]], []))
        with pytest.raises(Unavailable, match="group_duplicates needs the curation service"):
            core.extend_dataset("app", "x")
    finally:
        core.shutdown()


def test_group_duplicates_is_refused_with_from_inputs_and_never_drawn_without_the_groups(world: World, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="from_inputs"):
        world.core.create_dataset("app", "g", input_splits=True, group_duplicates=True)
    # no curation service configured, or unreachable: UNAVAILABLE, nothing frozen
    with pytest.raises(Unavailable, match=r"group_duplicates needs the curation service.*none configured"):
        world.core.create_dataset("app", "g", group_duplicates=True)
    dups = FakeDuplicates([])
    dups.status = "down"
    core = TrainingCore(world.store, world.peers, world.events, [world.heads], tmp_path / "jobs2", workers=1, health=dups)
    try:
        with pytest.raises(Unavailable, match=r"unreachable.*failed to connect.*nothing was frozen"):
            core.create_dataset("app", "g", group_duplicates=True)
        assert ("app", "g") not in world.store.datasets
    finally:
        core.shutdown()


def test_the_head_runner_leaves_out_inputs_deleted_since_the_freeze(tmp_path: Path) -> None:
    """A dropped duplicate (deleted after the version was frozen) is left out of the rows; an
    input that exists but has no vector yet still stops the job."""
    from firstlight.training.head_jobs import HeadRunner
    from firstlight.training.records import DatasetRow

    class Peers(FakePeers):
        def vectors_of(self, app_id: str, input_ids: Sequence[str]) -> tuple[dict[str, np.ndarray], str]:
            return {i: np.ones(4, np.float32) for i in input_ids if i not in ("gone", "late")}, ""

        def existing(self, app_id: str, input_ids: Sequence[str]) -> set[str]:
            return {i for i in input_ids if i != "gone"}

    runner = HeadRunner(Peers(), None)  # type: ignore[arg-type]
    rows = [DatasetRow("a", ["cat"], 1), DatasetRow("gone", ["cat"], 1), DatasetRow("b", ["dog"], 1)]
    X, Y, _, kept = runner._xy("app", rows)
    assert X.shape == (2, 4) and [r.input_id for r in kept] == ["a", "b"] and Y == [["cat"], ["dog"]]
    with pytest.raises(FailedPrecondition, match=r"1 inputs are not embedded yet .*'late'"):
        runner._xy("app", [*rows, DatasetRow("late", ["dog"], 1)])
