"""Curation's own store adopts the rows a stack from before issue 15 kept in the training
database: copied once into a new store, read back through the store's API, idempotent."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import create_engine, inspect

from firstlight.curation.store import LABELED, QUEUED, CurationStore, adopt_from_training_db
from firstlight.curation.stream import StreamCuration, make_policy
from firstlight.training.store import TrainingStore

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def _old_training_db(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A training database as the training process made it when curation ran inside it: the
    training tables and curation's tables on one engine (the old training.main wiring)."""
    url = f"sqlite:///{tmp_path / 'training' / 'training.db'}"
    (tmp_path / "training").mkdir()
    training = TrainingStore(url)
    old = CurationStore(engine=training.engine)
    stream = StreamCuration(old, clock=lambda: NOW)
    stream.set_policy(make_policy("pets", "animals", threshold=0.3, retrain_after_labels=2, dataset_id="main"))
    with old.engine.begin() as conn:
        for k in range(3):
            old.add_item(conn, app_id="pets", input_id=f"i{k}", model_id="animals", model_version="1", score=0.5 + k / 10,
                         strategy="margin", predicted="cat", queued_at=NOW)
        old.count(conn, "pets", "screened", 7)
        old.count(conn, "pets", "below_threshold", 4)
        old.set_labels(conn, "pets", "i0", ["dog"], NOW)
    old.mark_published("pets", ["i0", "i1"])
    old.add_round("pets", {"model_id": "animals", "kind": "pool", "labels_spent": 6, "total_labels": 6, "status": "done"})
    training.engine.dispose()
    return url


def test_a_new_store_adopts_the_training_databases_rows_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    training_url = _old_training_db(tmp_path)
    store = CurationStore(f"sqlite:///{tmp_path / 'curation.db'}")

    copied = adopt_from_training_db(store, training_url)
    assert copied == {"curation_policies": 1, "curation_queue": 3, "curation_counters": 2, "curation_rounds": 1}
    stream = StreamCuration(store)
    policy = stream.get_policy("pets")
    assert (policy.model_id, policy.threshold, policy.retrain_after_labels, policy.dataset_id) == ("animals", 0.3, 2, "main")
    items, _, stats = stream.queue("pets", 0, 10, "")
    assert [(i["input_id"], i["state"], i["concepts"], i["published"]) for i in items] == [
        ("i0", LABELED, ["dog"], True), ("i1", QUEUED, [], True), ("i2", QUEUED, [], False)
    ]
    assert items[0]["queued_at"] == NOW
    assert (stats["screened"], stats["below_threshold"], stats["queued"], stats["labeled"]) == (7, 4, 2, 1)
    assert [r["labels_spent"] for r in store.rounds("pets")] == [6]
    assert store.unused_labels("pets") == 1

    # Idempotent: the store is no longer new, nothing is copied twice.
    assert adopt_from_training_db(store, training_url) == {}
    assert len(store.items("pets")) == 3 and store.counters("pets")["screened"] == 7
    # The old tables stay where they were, unused.
    assert "curation_queue" in inspect(create_engine(training_url)).get_table_names()


def test_nothing_to_adopt_from_a_fresh_stack_or_into_a_used_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = CurationStore(f"sqlite:///{tmp_path / 'curation.db'}")
    assert adopt_from_training_db(store, f"sqlite:///{tmp_path / 'training' / 'training.db'}") == {}  # no file yet
    assert not (tmp_path / "training").exists()  # and none was created
    assert adopt_from_training_db(store, "") == {}
    bare = f"sqlite:///{tmp_path / 'bare.db'}"
    TrainingStore(bare)  # a training database made after the move: no curation tables
    assert adopt_from_training_db(store, bare) == {}

    training_url = _old_training_db(tmp_path)
    store.set_policy("other", {"app_id": "other", "model_id": "m"})  # the new store is in use already
    assert adopt_from_training_db(store, training_url) == {}
    assert store.policy("pets") is None
