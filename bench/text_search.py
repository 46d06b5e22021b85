"""Text → image search quality: precision@10 per concept with zero labels (the ImageNet-name
bridge alone) and after k labeled examples per concept (the bridge blended with the app's
concept prototypes). Same run, same images, same services."""

from __future__ import annotations

import numpy as np

from firstlight import datasets
from firstlight.sdk import Firstlight, UploadItem


def precision_at_10(client: Firstlight, app_id: str, truth: dict[str, str], concepts: list[str]) -> dict[str, float]:
    out = {}
    for concept in concepts:
        hits = client.search_by_text(app_id, concept, top_k=10).hits
        out[concept] = sum(truth[h.input_id] == concept for h in hits) / 10
    return out


def run(client: Firstlight, app_id: str = "textbench", per_class: int = 100, shots: int = 5, seed: int = 11) -> dict:
    animals = datasets.animal_mnist(per_class, seed=seed)
    truth = {i: c for i, c, _ in animals}
    concepts = sorted(set(truth.values()))
    client.create_app(app_id, exist_ok=True)
    client.upload(app_id, [UploadItem(d, [], id=i) for i, _, d in animals])
    client.wait_indexed(app_id, len(animals), timeout=1800)
    zero = precision_at_10(client, app_id, truth, concepts)
    rng = np.random.default_rng(seed)
    labeled: dict[str, str] = {}
    for concept in concepts:
        ids = sorted(i for i, c in truth.items() if c == concept)
        chosen = [str(x) for x in rng.choice(ids, size=shots, replace=False)]
        client.bulk_label(app_id, add=[concept], input_ids=chosen)
        labeled.update(dict.fromkeys(chosen, concept))
    client.wait_labels_visible(app_id, labeled, timeout=60.0 * len(concepts))
    labeled = precision_at_10(client, app_id, truth, concepts)
    return {
        "images": len(animals),
        "shots": shots,
        "zero_label_p10": zero,
        "labeled_p10": labeled,
        "zero_label_mean": float(np.mean(list(zero.values()))),
        "labeled_mean": float(np.mean(list(labeled.values()))),
    }
