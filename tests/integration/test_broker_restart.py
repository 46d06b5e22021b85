"""The local broker (memory storage) is SIGKILLed in the middle of an upload and a stream of
predictions with an app's model, and started again with the same command line and port. It comes
back empty: no topics, no records, no committed offsets. Afterwards every accepted input is
searchable exactly once (producers replaced after their fatal InitProducerId error, topics
re-created, consumers back at the start of the new log, and what the broker lost announced again
by the ingestion outbox's confirmation rule), every prediction succeeded, and an inference
service restarted after the broker restart still serves the app's model (its registry snapshot).
Then a label change and a deletion are relayed while search's vector store is down (so their
records wait unconsumed) and the broker restarts again: search's reconcile with ingestion's inputs
brings both back.

Its own stack: a broker that lost its state must not leak into the session stack's tests."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from firstlight import datasets
from firstlight.runtime.retry import RetryPolicy
from firstlight.sdk import Firstlight, FirstlightError, UploadItem
from firstlight.stack import SERVICES, LocalStack, wait_serving
from firstlight.v1 import ingestion_pb2, search_pb2

from .helpers import eventually, serving

pytestmark = [pytest.mark.integration]  # in CI (not `slow`): ~50-60 s with its own stack

APP = "restart"
CONCEPTS = ["cat", "dog", "zebra"]
# CI-sized; the figure is 1,000: FIRSTLIGHT_TEST_BROKER_IMAGES=1000 (a multiple of 10).
N_UPLOAD = int(os.environ.get("FIRSTLIGHT_TEST_BROKER_IMAGES", "300"))
CHUNK = 10
PATIENT = RetryPolicy(attempts=40, max_s=5.0, budget_s=150.0)


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir: Path = tmp_path_factory.mktemp("broker-restart")
    # While this file exists search's vector store fails every call (search.faults): its
    # consumers then leave label and deletion records unconsumed, for the broker to lose.
    env = {"FIRSTLIGHT_VECTOR_STORE_FAULT_FILE": str(data_dir / "vector-store-down")}
    with serving(LocalStack(data_dir, extra_env=env)) as s:
        yield s


@dataclass
class Traffic:
    client: Firstlight
    items: list[UploadItem]
    probe: list[bytes]
    stop: threading.Event = field(default_factory=threading.Event)
    accepted: list[str] = field(default_factory=list)
    upload_failures: list[str] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)

    def upload_loop(self) -> None:
        for start in range(0, len(self.items), CHUNK):
            try:
                report = self.client.upload(APP, self.items[start : start + CHUNK])
            except FirstlightError as exc:
                self.upload_failures.append(f"chunk at {start}: {exc}")
                continue
            self.accepted += report.input_ids
            self.upload_failures += [f"{f.id}: {f.code} {f.message}" for f in report.failures]
            time.sleep(0.2)  # paced: the restart lands in the middle of the stream

    def predict_loop(self) -> None:
        k = 0
        while not self.stop.is_set():
            try:
                self.client.predict([self.probe[k % len(self.probe)]], model="animals", app_id=APP, top_k=1)
                self.predictions.append("OK")
            except FirstlightError as exc:
                self.predictions.append(f"{exc.code.name}: {exc.message}")
            k += 1
            time.sleep(0.1)


def test_broker_sigkill_mid_upload_and_inference_restart(own_stack: LocalStack) -> None:
    stack = own_stack
    with Firstlight.from_addresses(stack.addresses, timeout_s=60, retry=PATIENT) as client:
        client.create_app(APP)
        labeled = datasets.animal_mnist(20, seed=3, classes=CONCEPTS)
        report = client.upload(APP, [UploadItem(d, [c], id=i) for i, c, d in labeled])
        assert not report.failures
        client.wait_indexed(APP, len(labeled), timeout=300)
        client.create_dataset(APP, "three", concepts=CONCEPTS, fractions=(0.6, 0.2, 0.2), seed=1)
        client.create_model(APP, "animals", CONCEPTS)
        assert client.train(APP, "animals", "three").version == "1"
        probe = [d for _, _, d in labeled[:6]]
        eventually(lambda: _served(client, probe), timeout=120, what="the app's model served")

        fresh = [UploadItem(d, [], id=f"r-{i}") for i, _, d in datasets.animal_mnist(N_UPLOAD // 10, seed=4)]
        assert len(fresh) == N_UPLOAD
        traffic = Traffic(client, fresh, probe)
        threads = [threading.Thread(target=traffic.upload_loop), threading.Thread(target=traffic.predict_loop)]
        for t in threads:
            t.start()
        try:
            eventually(lambda: client.indexed_count(APP) >= len(labeled) + 40, timeout=180, what="upload under way")
            assert stack.broker is not None
            stack.broker.kill()  # SIGKILL: memory storage gone
            stack.broker.start()  # same command line and port, empty
            threads[0].join(timeout=600)
            assert not threads[0].is_alive(), "the upload hung"
            accepted = len(labeled) + len(traffic.accepted)
            client.wait_indexed(APP, accepted, timeout=300)
        finally:
            traffic.stop.set()
            for t in threads:
                t.join(timeout=120)

        # Every accepted input is stored once and searchable exactly once.
        assert not traffic.upload_failures, traffic.upload_failures[:5]
        assert len(traffic.accepted) == N_UPLOAD and len(set(traffic.accepted)) == N_UPLOAD
        ids = [i for i, _, _ in labeled] + traffic.accepted
        time.sleep(2)  # late duplicates (re-announcements) would show up here
        assert client.indexed_count(APP) == len(ids)
        found = client.search.GetVectors(search_pb2.GetVectorsRequest(app_id=APP, input_ids=ids), timeout=60)
        assert sorted(v.input_id for v in found.vectors) == sorted(ids)
        outcomes = traffic.predictions
        assert len(outcomes) >= 5 and set(outcomes) == {"OK"}, {o: outcomes.count(o) for o in set(outcomes)}

        # An inference restart after the broker restart: model.version.ready is empty now, the
        # registry comes back from the replica's snapshot and the model is served.
        stack.kill_service("inference")
        stack.start_service("inference")
        assert _served(client, probe)
        for name in SERVICES:
            wait_serving(stack.services[name].address, timeout_s=60)


def _served(client: Firstlight, images: list[bytes]) -> bool:
    try:
        out = client.predict(images, model="animals", app_id=APP, top_k=1)
    except FirstlightError:
        return False
    return len(out) == len(images) and all(p and p[0][0] in CONCEPTS for p in out)


def test_labels_and_deletions_the_broker_lost_come_back(own_stack: LocalStack) -> None:
    """annotations.changed and inputs.deleted records relayed but not consumed when the broker
    restarts are lost; search's reconcile with ingestion's inputs brings their effect back."""
    stack = own_stack
    down = Path(stack.extra_env["FIRSTLIGHT_VECTOR_STORE_FAULT_FILE"])
    app = "lost"
    with Firstlight.from_addresses(stack.addresses, timeout_s=60, retry=PATIENT) as client:
        client.create_app(app)
        items = [UploadItem(d, ["cat"], id=f"l-{i}") for i, (_, _, d) in enumerate(datasets.animal_mnist(3, seed=11, classes=["cat", "dog"]))]
        assert not client.upload(app, items).failures
        client.wait_indexed(app, len(items), timeout=180)
        relabel, delete = [i.id for i in items[:2]], [i.id for i in items[2:4]]
        down.touch()  # search's consumers now retry their batches, uncommitted
        try:
            client.annotate(app, {i: ["zebra"] for i in relabel})
            client.ingestion.DeleteInputs(ingestion_pb2.DeleteInputsRequest(app_id=app, input_ids=delete), timeout=60)
            time.sleep(3)  # relayed (the outbox publishes within a second), not consumed
            assert stack.broker is not None
            stack.broker.kill()
            stack.broker.start()  # empty: the label and deletion records are gone
        finally:
            down.unlink(missing_ok=True)

        def restored() -> bool:
            found = client.search.GetVectors(search_pb2.GetVectorsRequest(app_id=app, input_ids=[i.id for i in items]), timeout=60)
            zebras = client.search_by_image(app, input_id=items[-1].id, top_k=len(items), concepts=["zebra"])
            kept = {v.input_id for v in found.vectors}
            return not kept & set(delete) and len(kept) == len(items) - len(delete) and {h.input_id for h in zebras.hits} == set(relabel)

        eventually(restored, timeout=180, what="the lost relabel and deletion reconciled by search")
        assert client.indexed_count(app) == len(items) - len(delete)
