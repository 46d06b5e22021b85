"""Transfer learning: ``train_transfer`` (the ``transfer_classifier`` template, default settings)
on 1k and 10k embedded images against scikit-learn's ``LogisticRegression()`` with its default
settings on the same rows.

Rows: the 1,000 real embeddings of the ingest benchmark (10 animal classes), and 10,000 derived
from them (``common.jittered``: labels follow the source row). 80% train, 20% held out, split
by source real image (no held-out row shares a source with a training row): the accuracy of
both fits is reported so a faster fit cannot hide a worse one.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from bench.common import Row, jittered
from firstlight.domain.heads.transfer import train_transfer


def _split(source: np.ndarray, n_sources: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """80/20 by *source* real row, so no held-out row is derived from a training row's source."""
    order = np.random.default_rng(seed).permutation(n_sources)
    train_sources = np.zeros(n_sources, dtype=bool)
    train_sources[order[: int(n_sources * 0.8)]] = True
    mask = train_sources[source]
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def _median_time(fn, repeats: int):  # type: ignore[no-untyped-def]
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def run(real: np.ndarray, labels: list[str], quick: bool = False, log=print) -> dict:  # type: ignore[no-untyped-def]
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    concepts = sorted(set(labels))
    sets = {"1k": (real, labels, np.arange(len(real)))}
    X10, y10, src10 = jittered(real, labels, 10_000, seed=5)
    sets["10k"] = (X10, y10, src10)
    # Warm-up: the first fit in a process pays for imports and BLAS start-up.
    few = slice(None, None, 10)  # every 10th row: all classes
    train_transfer(real[few], labels[few], sorted(set(labels[few])))
    LogisticRegression().fit(real[few], labels[few])

    out: dict = {}
    rows: list[Row] = []
    for name, (X, y, src) in sets.items():
        tr, te = _split(src, len(real), seed=0)
        Xtr, Xte = X[tr], X[te]
        ytr, yte = [y[i] for i in tr], np.asarray([y[i] for i in te])
        repeats = 1 if quick or name == "10k" else 3
        t_ours, model = _median_time(lambda: train_transfer(Xtr, ytr, concepts), repeats)
        probs = np.asarray(Xte @ model.W.T + model.b)
        acc_ours = float(np.mean(np.asarray(concepts)[probs.argmax(1)] == yte))

        def sk():  # type: ignore[no-untyped-def]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                clf = LogisticRegression().fit(Xtr, ytr)
            return clf, not any(issubclass(w.category, ConvergenceWarning) for w in caught)

        t_sk, (clf, sk_converged) = _median_time(sk, repeats)
        acc_sk = float(np.mean(clf.predict(Xte) == yte))
        out[name] = {
            "train_rows": len(tr),
            "dim": X.shape[1],
            "classes": len(concepts),
            "transfer_s": t_ours,
            "transfer_n_iter": model.n_iter,
            "transfer_converged": model.converged,
            "transfer_heldout_accuracy": acc_ours,
            "sklearn_default_s": t_sk,
            "sklearn_n_iter": int(np.max(clf.n_iter_)),
            "sklearn_converged": sk_converged,
            "sklearn_heldout_accuracy": acc_sk,
            "repeats": repeats,
        }
        log(
            f"  {name}: train_transfer {t_ours:.2f}s ({model.n_iter} it, acc {acc_ours:.3f}); sklearn default {t_sk:.2f}s ({out[name]['sklearn_n_iter']} it, acc {acc_sk:.3f})"  # noqa: E501
        )
        rows.append(
            Row(
                f"train_transfer, {name} embeddings ({len(tr):,} train rows)",
                f"{t_ours:.2f} s, {model.n_iter} iterations, held-out acc {acc_ours:.3f}",
                f"sklearn LogisticRegression() defaults {t_sk:.2f} s, {out[name]['sklearn_n_iter']} it"
                f"{'' if sk_converged else ' (not converged)'}, acc {acc_sk:.3f}",
                f"{t_ours / t_sk:.2f}× time",
            )
        )
    return {"rows": [r.as_dict() for r in rows], **out}
