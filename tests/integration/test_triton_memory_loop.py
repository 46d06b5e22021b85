"""Triton's memory stays flat over a 50-round train-and-predict loop (issue: versions loaded
forever grew Triton ~37 MB per version). Each round trains a new version of one app model and
predicts with the serving version and with a random older one; the Triton server and its model
stubs (its process group) are sampled after every round. Slow: run with `-m slow`."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from firstlight import datasets
from firstlight.sdk import Firstlight, FirstlightError, UploadItem

from .helpers import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "memloop"
CONCEPTS = ["cat", "dog", "zebra"]
ROUNDS = int(os.environ.get("FIRSTLIGHT_TEST_MEMORY_ROUNDS", "50"))


def group_rss_mib(pgid: int) -> float:
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != pgid:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total / 1024


def test_triton_memory_flat_over_50_rounds(stack, client: Firstlight) -> None:  # type: ignore[no-untyped-def]
    client.create_app(APP)
    labeled = datasets.animal_mnist(8, seed=31, classes=CONCEPTS)
    assert not client.upload(APP, [UploadItem(d, [c], id=i) for i, c, d in labeled]).failures
    client.wait_indexed(APP, len(labeled), timeout=300)
    client.create_dataset(APP, "d", concepts=CONCEPTS, fractions=(0.6, 0.2, 0.2), seed=1)
    client.create_model(APP, "m", CONCEPTS)
    images = [d for _, _, d in labeled[:4]]
    rng = random.Random(0)
    pgid = stack.triton.pid
    samples = []
    for n in range(1, ROUNDS + 1):
        client.train(APP, "m", "d", settings={"C": str(rng.choice([0.1, 1.0, 10.0]))})
        eventually(lambda n=n: _served(client, images[:1], str(n)), timeout=60, what=f"v{n} served")  # announced, loaded
        client.predict(images, model="m", app_id=APP, top_k=1)
        client.predict(images[:1], model="m", version=str(rng.randint(1, n)), app_id=APP, top_k=1)
        samples.append(group_rss_mib(pgid))
        print(f"round {n}: triton process group RSS {samples[-1]:.0f} MiB")
    growth = max(samples[-40:]) - samples[-40] if len(samples) >= 40 else max(samples) - samples[0]
    print(f"triton RSS: first {samples[0]:.0f} MiB, round 10 {samples[min(9, len(samples) - 1)]:.0f}, last {samples[-1]:.0f}, "
          f"growth over the last 40 rounds {growth:.0f} MiB")  # fmt: skip
    assert growth < 50, samples


def _served(client: Firstlight, images: list[bytes], version: str) -> bool:
    try:
        return bool(client.predict(images, model="m", version=version, app_id=APP, top_k=1))
    except FirstlightError:
        return False
