"""Frozen-backbone embeddings of the bundled labeled sets, cached for active-learning experiments.

Not used by the service at run time: this is how the benchmark in ``simulate.py`` gets real
embeddings (EfficientNet-Lite0, the same backbone and preprocessing the embedding service uses)
without paying the backbone cost on every run.

Datasets (read from installed packages, never downloaded):

- ``animal-mnist``: all 10,000 28×28 grayscale images (pip package ``animal-mnist``).
- ``fashion-mnist``: a fixed 10,000-image subset of the 60k training images (pool) and a fixed
  2,000-image subset of the 10k test images (Debian package ``dataset-fashion-mnist``,
  ``/usr/share/datasets/fashion-mnist``).

Images go gray → RGB → ``preprocess.to_model_input(size)`` (resize shorter side, center crop) →
``backbone.embed_and_classify`` → L2-normalised 1280-d float32 embeddings.

Cache layout (``<cache>/<name>_<size>px_{emb,labels}.npy`` and, for Fashion-MNIST,
``..._test_{emb,labels}.npy``), default cache dir ``<repo>/.cache/al`` or ``$FIRSTLIGHT_AL_CACHE``.

    python -m firstlight.curation.al_data [--size 224] [--threads 2] [animal-mnist fashion-mnist]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
FASHION_POOL = 10_000
FASHION_TEST = 2_000
_SUBSET_SEED = 0


def default_cache_dir() -> Path:
    env = os.environ.get("FIRSTLIGHT_AL_CACHE")
    if env:
        return Path(env)
    # services/firstlight/curation/al_data.py -> repo root is parents[3]
    return Path(__file__).resolve().parents[3] / ".cache" / "al"


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pool images [10000,28,28], pool labels, test images [2000,28,28], test labels), fixed subsets."""
    if not FASHION_DIR.is_dir():
        raise FileNotFoundError(f"{FASHION_DIR} missing: apt-get install -y dataset-fashion-mnist")
    xtr = _read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")
    ytr = _read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz").astype(int)
    xte = _read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    yte = _read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz").astype(int)
    rng = np.random.default_rng(_SUBSET_SEED)
    itr = np.sort(rng.choice(len(xtr), FASHION_POOL, replace=False))
    ite = np.sort(rng.choice(len(xte), FASHION_TEST, replace=False))
    return xtr[itr], ytr[itr], xte[ite], yte[ite]


def embed_gray_images(images: np.ndarray, size: int = 224, batch: int = 4, threads: int = 2, log=None) -> np.ndarray:
    """Gray uint8 [N,h,w] → L2-normalised EfficientNet-Lite0 embeddings float32 [N,1280]."""
    from PIL import Image

    from firstlight.models import backbone
    from firstlight.models.preprocess import to_model_input

    backbone.configure_torch_threads(threads)
    model = backbone.load_efficientnet()
    out = np.empty((len(images), backbone.EMBEDDING_DIM), dtype=np.float32)
    t0 = time.monotonic()
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        x = np.stack([to_model_input(Image.fromarray(im).convert("RGB"), size) for im in chunk])
        emb, _ = backbone.embed_and_classify(model, x)
        out[start : start + len(chunk)] = emb
        if log and (start // batch) % 250 == 0:
            done = start + len(chunk)
            log(f"  {done}/{len(images)} images, {done / max(time.monotonic() - t0, 1e-9):.0f} img/s")
    return out


def _paths(cache: Path, name: str, size: int) -> dict[str, Path]:
    stem = f"{name}_{size}px"
    return {
        "emb": cache / f"{stem}_emb.npy",
        "labels": cache / f"{stem}_labels.npy",
        "test_emb": cache / f"{stem}_test_emb.npy",
        "test_labels": cache / f"{stem}_test_labels.npy",
    }


def build_cache(name: str, size: int = 224, threads: int = 2, cache: Path | None = None, log=print) -> None:
    cache = cache or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    p = _paths(cache, name, size)
    if name == "animal-mnist":
        from firstlight.datasets import _animal_arrays

        images, labels = _animal_arrays()
        parts = {"emb": (images, labels)}
    elif name == "fashion-mnist":
        xtr, ytr, xte, yte = fashion_mnist_arrays()
        parts = {"emb": (xtr, ytr), "test_emb": (xte, yte)}
    else:
        raise ValueError(f"unknown dataset {name!r}")
    for key, (imgs, labs) in parts.items():
        if p[key].exists():
            log(f"{p[key]} exists, skipping")
            continue
        log(f"{name} {key}: embedding {len(imgs)} images at {size}px")
        t0 = time.monotonic()
        emb = embed_gray_images(imgs, size=size, threads=threads, log=log)
        lab_key = "labels" if key == "emb" else "test_labels"
        np.save(p[lab_key], np.asarray(labs, dtype=np.int64))
        np.save(p[key], emb)  # written last: its presence means the pair is complete
        log(f"{name} {key}: done in {time.monotonic() - t0:.0f}s -> {p[key]}")


def load_cached(name: str, size: int = 224, cache: Path | None = None, test_size: int = 2000, split_seed: int = 0):
    """(X_pool, y_pool, X_test, y_test) from the cache.

    Fashion-MNIST has a separate test subset; animal-mnist's 10k are split stratified into
    ``10000 - test_size`` pool and ``test_size`` test images with ``split_seed``.
    """
    cache = cache or default_cache_dir()
    p = _paths(cache, name, size)
    if not p["emb"].exists():
        raise FileNotFoundError(f"{p['emb']} missing: python -m firstlight.curation.al_data --size {size} {name}")
    X, y = np.load(p["emb"]), np.load(p["labels"])
    if p["test_emb"].exists():
        return X, y, np.load(p["test_emb"]), np.load(p["test_labels"])
    from sklearn.model_selection import train_test_split

    Xp, Xt, yp, yt = train_test_split(X, y, test_size=test_size, stratify=y, random_state=split_seed)
    return Xp, yp, Xt, yt


def load_images(name: str, test_size: int = 2000, split_seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pool images, pool labels, test images, test labels) as gray uint8 [N,28,28], row for row
    the images behind :func:`load_cached`'s embeddings (same subsets, same split)."""
    if name == "fashion-mnist":
        return fashion_mnist_arrays()
    if name != "animal-mnist":
        raise ValueError(f"unknown dataset {name!r}")
    from sklearn.model_selection import train_test_split

    from firstlight.datasets import _animal_arrays

    images, labels = _animal_arrays()
    ip, it = train_test_split(np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=split_seed)
    return images[ip], labels[ip], images[it], labels[it]


def class_names(name: str) -> list[str]:
    if name == "fashion-mnist":
        return list(FASHION_CLASSES)
    from firstlight.datasets import ANIMAL_CLASSES

    return list(ANIMAL_CLASSES)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("datasets", nargs="*", default=["animal-mnist", "fashion-mnist"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args(argv)
    for name in args.datasets:
        build_cache(name, size=args.size, threads=args.threads, cache=args.cache, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
