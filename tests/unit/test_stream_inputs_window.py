"""StreamInputs checks several inputs at once (issue 17: a photo's decode is tens of ms) and
still answers as a sequential loop would: ids in order, failures with their index, a repeated
id refused as ALREADY_EXISTS."""

import asyncio
import io
from pathlib import Path

import numpy as np
from PIL import Image

from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.ingestion.core import Ingestion
from firstlight.ingestion.servicer import IngestionServicer
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.v1 import common_pb2, ingestion_pb2


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_stream_answers_in_order_with_failures_and_repeats(tmp_path: Path) -> None:
    core = Ingestion(MetadataStore(make_engine(f"sqlite:///{tmp_path / 'm.db'}")), LocalBlobStore(tmp_path / "b"), ImageLimits())
    core.create_app("app")
    servicer = IngestionServicer(core)
    specs = [
        common_pb2.InputSpec(id="a", image_bytes=png(0)),
        common_pb2.InputSpec(id="b", image_bytes=b"not an image"),
        common_pb2.InputSpec(id="c", image_bytes=png(1)),
        common_pb2.InputSpec(id="a", image_bytes=png(2)),  # repeated while "a" may still be in flight
        common_pb2.InputSpec(id="d", image_bytes=png(3), concepts=[""]),  # invalid concept
        *(common_pb2.InputSpec(id=f"n{i}", image_bytes=png(10 + i)) for i in range(6)),
    ]

    async def messages():  # type: ignore[no-untyped-def]
        for spec in specs:
            yield ingestion_pb2.StreamInputsRequest(app_id="app", input=spec)

    response = asyncio.run(servicer.StreamInputs(messages(), None))
    assert list(response.input_ids) == ["a", "c"] + [f"n{i}" for i in range(6)]
    assert [(f.index, f.id, f.code) for f in response.failures] == [(1, "b", "INVALID_ARGUMENT"), (3, "a", "ALREADY_EXISTS"), (4, "d", "INVALID_ARGUMENT")]
