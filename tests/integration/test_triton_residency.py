"""Bounded Triton with real parts: after more trained versions than the inference service keeps
(FIRSTLIGHT_TRITON_KEEP_VERSIONS, 3 by default), Triton's repository index shows only the serving
version and the most recent others READY; a Predict pinned to an old version loads it on demand
and the count stays bounded."""

from __future__ import annotations

import pytest
import tritonclient.grpc as grpcclient

from firstlight import datasets
from firstlight.sdk import Firstlight, UploadItem
from firstlight.training.export import triton_model_name
from firstlight.triton.client import TOKEN_HEADER

from .helpers import eventually

pytestmark = [pytest.mark.integration]

APP = "resid"
CONCEPTS = ["cat", "dog", "zebra"]
KEEP = 3
VERSIONS = 5


def ready_versions(stack, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    headers = {TOKEN_HEADER: stack.triton_token} if getattr(stack, "triton_token", "") else None
    with grpcclient.InferenceServerClient(stack.addresses["triton"]) as triton:
        index = triton.get_model_repository_index(headers=headers, as_json=True).get("models", [])
    return sorted((m["version"] for m in index if m["name"] == name and m.get("state") == "READY" and m.get("version")), key=int)


def test_triton_keeps_the_serving_and_recent_versions_loaded(stack, client: Firstlight) -> None:  # type: ignore[no-untyped-def]
    client.create_app(APP)
    labeled = datasets.animal_mnist(8, seed=21, classes=CONCEPTS)
    assert not client.upload(APP, [UploadItem(d, [c], id=i) for i, c, d in labeled]).failures
    client.wait_indexed(APP, len(labeled), timeout=300)
    client.create_dataset(APP, "d", concepts=CONCEPTS, fractions=(0.6, 0.2, 0.2), seed=1)
    client.create_model(APP, "m", CONCEPTS)
    for n in range(VERSIONS):
        assert client.train(APP, "m", "d").version == str(n + 1)
    name = triton_model_name(APP, "m")
    serving = client.versions(APP, "m").model.serving_version
    loaded = eventually(lambda: (lambda r: r if str(VERSIONS) in r else None)(ready_versions(stack, name)), timeout=120,
                        what=f"v{VERSIONS} loaded")  # fmt: skip
    assert len(loaded) == KEEP and serving in loaded, (loaded, serving)

    old = next(v for v in map(str, range(1, VERSIONS + 1)) if v not in loaded)
    image = [labeled[0][2]]
    assert client.predict(image, model="m", version=old, app_id=APP, top_k=1)[0][0][0] in CONCEPTS  # loaded on demand
    now = ready_versions(stack, name)
    assert old in now and serving in now and len(now) == KEEP, now
