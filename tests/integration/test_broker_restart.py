"""The local broker (memory storage) is SIGKILLed in the middle of an upload and a stream of
predictions with an app's model, and started again with the same command line and port. It comes
back empty: no topics, no records, no committed offsets. Afterwards every accepted input is
searchable exactly once (producers replaced after their fatal InitProducerId error, topics
re-created, consumers back at the start of the new log, and what the broker lost announced again
by the ingestion outbox's confirmation rule), every prediction succeeded, and an inference
service restarted after the broker restart still serves the app's model (its registry snapshot).

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
from firstlight.v1 import search_pb2

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
    with serving(LocalStack(data_dir)) as s:
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
