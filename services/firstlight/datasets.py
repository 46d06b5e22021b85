"""Bundled images, read from installed packages (never downloaded): animal-mnist (10k 28×28
animal silhouettes, 10 classes) and scikit-image's sample photos."""

from __future__ import annotations

import gzip
import io
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
SAMPLE_PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]


@lru_cache(maxsize=1)
def _animal_arrays() -> tuple[np.ndarray, np.ndarray]:
    # Read the package's gzip pickles directly: its loader module imports tensorflow.
    import animal_mnist

    root = Path(animal_mnist.__file__).parent / "data" / "Animal_MNIST"
    with gzip.open(root / "animal_data_version_3.gz", "rb") as fh:
        images = np.asarray(pickle.load(fh), dtype=np.uint8)
    with gzip.open(root / "animal_label_version_3.gz", "rb") as fh:
        labels = np.asarray(pickle.load(fh)).astype(int)
    return images.reshape(-1, 28, 28), labels


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def animal_mnist(per_class: int, seed: int = 0, classes: list[str] | None = None) -> list[tuple[str, str, bytes]]:
    """(id, class name, PNG bytes), ``per_class`` of each class, deterministic for a seed."""
    images, labels = _animal_arrays()
    rng = np.random.default_rng(seed)
    wanted = classes or ANIMAL_CLASSES
    out = []
    for name in wanted:
        idx = np.flatnonzero(labels == ANIMAL_CLASSES.index(name))
        chosen = rng.choice(idx, size=min(per_class, len(idx)), replace=False)
        out += [(f"am-{i:05d}", name, png_bytes(images[i])) for i in sorted(chosen)]
    return out


def export_animal_mnist(folder: Path, per_class: int, seed: int = 0) -> int:
    """Write ``folder/<class>/<id>.png`` — the layout ``firstlight upload`` expects."""
    items = animal_mnist(per_class, seed)
    for input_id, name, data in items:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / f"{input_id}.png").write_bytes(data)
    return len(items)


def sample_photo(name: str) -> bytes:
    """A scikit-image sample photo as JPEG bytes (e.g. 'chelsea', a tabby cat)."""
    from skimage import data

    array = getattr(data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    buf = io.BytesIO()
    Image.fromarray(array[..., :3]).save(buf, format="JPEG", quality=92)
    return buf.getvalue()
