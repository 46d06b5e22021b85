"""SetEmbeddingModel in the ingestion core: the app's model, the change event and every input
re-announced with the new model, in one transaction (outbox), over a real SQLite store."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

import pytest

from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.errors import InvalidArgument, NotFound
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.messaging import topics
from firstlight.v1 import events_pb2


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def core(tmp_path: Path) -> Ingestion:
    ing = Ingestion(MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}")), LocalBlobStore(tmp_path / "blobs"), ImageLimits())
    ing.create_app("app")
    ing.post_inputs("app", [NewInput(png(i), id=f"i{i}", concepts=["cat"] if i % 2 else []) for i in range(3)])
    ing.store.outbox_ack([seq for seq, _ in ing.store.outbox_batch(100)])
    return ing


def drain(core: Ingestion) -> list[tuple[str, bytes]]:
    batch = core.store.outbox_batch(1000)
    core.store.outbox_ack([seq for seq, _ in batch])
    return [(e.topic, e.value) for _, e in batch]


def test_switch_announces_the_change_and_every_input_with_the_new_model(core: Ingestion) -> None:
    app, changed, n = core.set_embedding_model("app", "fl.app.emb@2")
    assert changed and n == 3 and app["embedding_model"] == "fl.app.emb@2"
    events = drain(core)
    assert events[0][0] == topics.EMBEDDING_MODEL_CHANGED
    change = events_pb2.EmbeddingModelChanged.FromString(events[0][1])
    assert (change.embedding_model, change.previous_embedding_model, list(change.input_ids)) == ("fl.app.emb@2", "", ["i0", "i1", "i2"])
    reannounced = [events_pb2.InputIngested.FromString(v) for t, v in events[1:] if t == topics.INPUTS_INGESTED]
    assert [e.input_id for e in reannounced] == ["i0", "i1", "i2"]
    assert {e.embedding_model for e in reannounced} == {"fl.app.emb@2"}
    assert [list(e.concepts) for e in reannounced] == [[], ["cat"], []] and all(e.blob_uri for e in reannounced)
    # new uploads are embedded with the app's model; the same model again is a no-op
    core.post_inputs("app", [NewInput(png(9), id="late")])
    assert events_pb2.InputIngested.FromString(drain(core)[0][1]).embedding_model == "fl.app.emb@2"
    assert core.set_embedding_model("app", "fl.app.emb@2")[1:] == (False, 0) and drain(core) == []
    # back to the base backbone
    assert core.set_embedding_model("app", "")[1:] == (True, 4)
    back = events_pb2.EmbeddingModelChanged.FromString(drain(core)[0][1])
    assert (back.embedding_model, back.previous_embedding_model) == ("", "fl.app.emb@2")


def test_bad_model_names_and_unknown_apps(core: Ingestion) -> None:
    for bad in ("has space", "@3", "name@0", "name@x", "-lead", "a/b"):
        with pytest.raises(InvalidArgument):
            core.set_embedding_model("app", bad)
    with pytest.raises(NotFound):
        core.set_embedding_model("nope", "fl.x")
    assert drain(core) == []
