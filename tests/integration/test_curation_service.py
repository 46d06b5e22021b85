"""Curation as a process of its own (issue 15): a stack from before the move kept curation's
tables in the training database; a curation process started over it adopts them into its own
store and serves them (policy, queue, counters, rounds) over its own port."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from firstlight.curation.store import CurationStore
from firstlight.curation.stream import StreamCuration, make_policy
from firstlight.messaging.broker import LocalBroker
from firstlight.sdk import Firstlight
from firstlight.stack import free_port, wait_serving
from firstlight.training.store import TrainingStore

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def _old_training_db(path: Path) -> str:
    """The training database as the training process left it while curation ran inside it."""
    path.parent.mkdir(parents=True)
    url = f"sqlite:///{path}"
    training = TrainingStore(url)
    old = CurationStore(engine=training.engine)
    StreamCuration(old).set_policy(make_policy("adopted", "animals", threshold=0.3, budget=40))
    with old.engine.begin() as conn:
        for k in range(3):
            old.add_item(conn, app_id="adopted", input_id=f"i{k}", model_id="animals", model_version="1", score=0.6,
                         strategy="margin", predicted="cat", queued_at=NOW)
        old.count(conn, "adopted", "screened", 9)
        old.set_labels(conn, "adopted", "i0", ["dog"], NOW)
    old.add_round("adopted", {"app_id": "adopted", "model_id": "animals", "round": 0, "strategy": "margin", "labels_spent": 4,
                              "total_labels": 4, "dataset_version": "d", "previous_version": "", "candidate_version": "1",
                              "promoted": True, "note": "", "metrics": {"accuracy": 0.9}, "previous_metrics": {}, "status": "done",
                              "kind": "pool"})
    training.engine.dispose()
    return url


def test_curation_process_adopts_the_training_databases_rows(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = _old_training_db(tmp_path / "training" / "training.db")
    port = free_port()
    # Its own broker: on the session stack's, its consumers would join the session curation's
    # consumer groups (group ids do not carry the topic prefix) and rebalance them mid-test.
    broker = LocalBroker(log_file=tmp_path / "broker.log").start()
    env = stack.env_for("curation")
    env.update(
        FIRSTLIGHT_DATA_DIR=str(tmp_path / "curation"),
        FIRSTLIGHT_GRPC_PORT=str(port),
        FIRSTLIGHT_ADOPT_FROM_DATABASE_URL=url,
        FIRSTLIGHT_KAFKA_BOOTSTRAP=broker.bootstrap,
    )
    log = tmp_path / "curation.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "firstlight.curation.main"], env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"127.0.0.1:{port}", 120, proc, log)
        with Firstlight.from_addresses({**stack.addresses, "curation": f"127.0.0.1:{port}"}, timeout_s=60) as client:
            policy = client.get_policy("adopted")
            assert (policy.model_id, round(policy.threshold, 3), policy.budget) == ("animals", 0.3, 40)
            queue = client.labeling_queue("adopted")
            assert [(i.input_id, list(i.concepts)) for i in queue.items] == [("i0", ["dog"]), ("i1", []), ("i2", [])]
            assert (queue.stats.screened, queue.stats.queued, queue.stats.labeled) == (9, 2, 1)
            [r] = client.learning_rounds("adopted")
            assert (r.labels_spent, r.candidate_version, r.promoted) == (4, "1", True)
    finally:
        proc.terminate()
        proc.wait(30)
        broker.stop()
    assert (tmp_path / "curation" / "curation.db").exists()  # its own store, beside nothing of training's
