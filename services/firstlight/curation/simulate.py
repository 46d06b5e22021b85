"""Active-learning benchmark with an oracle: does a selection strategy beat random labeling?

Protocol (one run = one strategy × one seed):

1. From the pool (X, y) take ``seed_per_class`` random labels of every class (the seed set; the
   same for every strategy at a given seed, so comparisons are paired).
2. Repeat ``rounds`` times: fit the classifier on the labeled set, record test accuracy on the
   held-out (X_test, y_test), let the strategy pick ``batch`` pool inputs, reveal their labels
   (the oracle). A last fit/evaluation after the final round gives ``rounds + 1`` curve points at
   ``K·seed_per_class + r·batch`` labels.

Summary metric, per strategy: **labels needed to reach random's final mean accuracy**, read off
the strategy's mean curve by linear interpolation between rounds, and its ratio to random's final
budget (``labels / (K·seed_per_class + rounds·batch)``; lower is better, 1.0 = no saving, None =
never reached within the budget). Per-seed ratios (each seed's curve against that seed's random
final accuracy) are also reported, to show the seed noise.

The classifier is injectable: ``fit(X, y) -> model`` with ``predict_proba`` (columns in
``model.classes_`` order when it has that attribute, else 0..K-1). The default is the live
loop's: the transfer template's own training code (``training.transfer.train_transfer``, what
TrainModel runs) with its default settings (multinomial logistic regression, C=100, balanced
class weights, lbfgs tol 1e-6, one BLAS thread); ``transfer_fit(TransferSettings(...))`` for
other settings. ``curation.benchmark --through-services`` runs the same protocol through the
running stack's RPCs instead.

"mc_dropout" in the simulation uses input dropout on the fitted model (T passes of
``predict_proba`` with a Bernoulli(1-rate)/(1-rate) mask on the embeddings), as a stand-in for
a network's dropout; any other name is passed to ``strategies.select``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from firstlight.curation import strategies as st

FitFn = Callable[[np.ndarray, np.ndarray], Any]


class _Fitted:
    """A trained transfer head with ``classes_`` (the label values its columns stand for)."""

    def __init__(self, head, classes: np.ndarray) -> None:  # type: ignore[no-untyped-def]
        self.head = head
        self.classes_ = classes

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.head.predict_proba(np.asarray(X, dtype=np.float32))


def transfer_fit(settings=None) -> FitFn:  # type: ignore[no-untyped-def]
    """Factory: the transfer template's own training code (``training.transfer.train_transfer``,
    the function the training service's TrainModel calls) with ``settings`` (default: the
    template's defaults, ``TransferSettings()``: C=100, balanced, lbfgs tol 1e-6, one BLAS
    thread). Labels become concept names ``str(label)``; columns follow ``np.unique(y)``."""
    from firstlight.domain.heads.transfer import TransferSettings, train_transfer

    s = settings or TransferSettings()

    def fit(X: np.ndarray, y: np.ndarray):  # type: ignore[no-untyped-def]
        classes = np.unique(y)
        head = train_transfer(np.asarray(X, dtype=np.float32), [str(v) for v in y], [str(c) for c in classes], s)
        return _Fitted(head, classes)

    fit.__name__ = f"transfer_classifier(C={s.C:g}, class_weight={s.class_weight})"
    return fit


#: The transfer template with its default settings (what TrainModel trains).
default_fit: FitFn = transfer_fit()


def _proba(model, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """predict_proba with columns aligned to `classes` (absent classes get probability 0)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        p = np.asarray(model.predict_proba(X), dtype=np.float64)
    model_classes = getattr(model, "classes_", None)
    if model_classes is None:
        if p.shape[1] != len(classes):
            raise ValueError(f"model returned {p.shape[1]} columns for {len(classes)} classes and has no classes_")
        return p
    model_classes = np.asarray(model_classes)
    if len(model_classes) == len(classes) and np.array_equal(model_classes, classes):
        return p
    out = np.zeros((len(X), len(classes)))
    out[:, np.searchsorted(classes, model_classes)] = p
    return out


def _mc_input_dropout(model, X, classes, rng, passes: int, rate: float) -> np.ndarray:
    out = np.empty((passes, len(X), len(classes)))
    for t in range(passes):
        mask = (rng.random(X.shape) >= rate) / (1.0 - rate)
        out[t] = _proba(model, X * mask, classes)
    return out


@dataclass
class BenchmarkResult:
    """Accuracy of every (strategy, seed) run at each round, and the summaries derived from it."""

    strategies: list[str]
    seeds: list[int]
    labels: list[int]  # labels spent at each curve point (same for every run)
    accuracy: dict[str, dict[int, list[float]]]  # strategy -> seed -> accuracy per curve point
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per strategy (all seeds)
    control: str = "random"

    # -- aggregates ----------------------------------------------------------------------------
    def curve(self, strategy: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of test accuracy over seeds at each curve point."""
        a = np.array([self.accuracy[strategy][s] for s in self.seeds])
        return a.mean(axis=0), a.std(axis=0)

    @staticmethod
    def _labels_to_reach(labels: np.ndarray, acc: np.ndarray, target: float) -> float | None:
        if acc[0] >= target:
            return float(labels[0])
        for i in range(1, len(acc)):
            if acc[i] >= target:
                a0, a1 = acc[i - 1], acc[i]
                frac = (target - a0) / (a1 - a0) if a1 > a0 else 1.0
                return float(labels[i - 1] + frac * (labels[i] - labels[i - 1]))
        return None

    def target(self) -> float:
        """The control's final mean accuracy."""
        return float(self.curve(self.control)[0][-1])

    def labels_needed(self, strategy: str) -> float | None:
        """Labels at which the strategy's mean curve first reaches the control's final mean accuracy."""
        return self._labels_to_reach(np.array(self.labels), self.curve(strategy)[0], self.target())

    def ratio(self, strategy: str) -> float | None:
        n = self.labels_needed(strategy)
        return None if n is None else n / self.labels[-1]

    def per_seed_ratios(self, strategy: str) -> list[float | None]:
        out = []
        for s in self.seeds:
            target = self.accuracy[self.control][s][-1]
            n = self._labels_to_reach(np.array(self.labels), np.array(self.accuracy[strategy][s]), target)
            out.append(None if n is None else n / self.labels[-1])
        return out

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        for name in self.strategies:
            mean, std = self.curve(name)
            per_seed = self.per_seed_ratios(name)
            reached = [r for r in per_seed if r is not None]
            rows.append(
                {
                    "strategy": name,
                    "final_accuracy_mean": float(mean[-1]),
                    "final_accuracy_std": float(std[-1]),
                    "labels_to_reach_control": self.labels_needed(name),
                    "ratio_vs_control": self.ratio(name),
                    "per_seed_ratios": per_seed,
                    "per_seed_ratio_mean": float(np.mean(reached)) if len(reached) == len(per_seed) else None,
                    "per_seed_ratio_std": float(np.std(reached)) if len(reached) == len(per_seed) else None,
                    "seconds": self.seconds.get(name),
                }
            )
        return rows

    # -- outputs -------------------------------------------------------------------------------
    def to_json(self) -> str:
        curves = {}
        for name in self.strategies:
            mean, std = self.curve(name)
            curves[name] = {"mean": mean.tolist(), "std": std.tolist()}
        return json.dumps(
            {
                "settings": self.settings,
                "seeds": self.seeds,
                "labels": self.labels,
                "control": self.control,
                "control_final_accuracy": self.target(),
                "accuracy": {k: {str(s): v for s, v in d.items()} for k, d in self.accuracy.items()},
                "curves": curves,
                "summary": self.summary(),
            },
            indent=1,
        )

    def to_markdown(self) -> str:
        def fmt(r):
            return "never" if r is None else f"{r:.2f}×"

        lines = [
            f"Target: {self.control}'s final mean accuracy {self.target():.4f} at {self.labels[-1]} labels "
            f"(seeds {self.seeds}; {self.settings.get('seed_per_class')}/class seed, "
            f"{self.settings.get('rounds')} rounds of {self.settings.get('batch')}).",
            "",
            "| strategy | final acc (mean ± std) | labels to reach target | ratio vs random | per-seed ratio (mean ± std) |",
            "|---|---|---|---|---|",
        ]
        for row in self.summary():
            n = row["labels_to_reach_control"]
            ps = "—" if row["per_seed_ratio_mean"] is None else f"{row['per_seed_ratio_mean']:.2f} ± {row['per_seed_ratio_std']:.2f}"
            lines.append(
                f"| {row['strategy']} | {row['final_accuracy_mean']:.4f} ± {row['final_accuracy_std']:.4f} "
                f"| {'never' if n is None else f'{n:.0f}'} | {fmt(row['ratio_vs_control'])} | {ps} |"
            )
        return "\n".join(lines) + "\n"

    def plot(self, path, title: str | None = None) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
        x = np.array(self.labels)
        for name in self.strategies:
            mean, std = self.curve(name)
            style = dict(color="black", linestyle="--") if name == self.control else {}
            ax.plot(x, mean, label=name, linewidth=1.6, **style)
            ax.fill_between(x, mean - std, mean + std, alpha=0.12, **({"color": "black"} if name == self.control else {}))
        ax.axhline(self.target(), color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("labels")
        ax.set_ylabel("test accuracy")
        ax.set_title(title or f"active learning, {len(self.seeds)} seeds (mean ± std)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def seed_set(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """`per_class` random pool indices of each class."""
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c!r} has {len(idx)} pool examples, fewer than seed_per_class={per_class}")
        out.append(rng.choice(idx, size=per_class, replace=False))
    return np.concatenate(out)


def run_curve(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    strategy: str,
    seed: int,
    seed_per_class: int = 2,
    rounds: int = 15,
    batch: int = 50,
    fit: FitFn = default_fit,
    mc_passes: int = 10,
    mc_dropout_rate: float = 0.2,
) -> tuple[list[int], list[float]]:
    """One strategy, one seed: (labels spent, test accuracy) at each of rounds+1 points.

    Runs with BLAS pinned to one thread: besides being the right setting for small fits on a
    shared CPU, it makes runs bit-reproducible (threaded reductions reorder sums, and one flipped
    near-tie changes every later round).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _run_curve(X, y, X_test, y_test, strategy=strategy, seed=seed, seed_per_class=seed_per_class,
                          rounds=rounds, batch=batch, fit=fit, mc_passes=mc_passes,
                          mc_dropout_rate=mc_dropout_rate)  # fmt: skip


def _run_curve(X, y, X_test, y_test, *, strategy, seed, seed_per_class, rounds, batch, fit, mc_passes, mc_dropout_rate):
    classes = np.unique(y)
    labeled = np.zeros(len(X), dtype=bool)
    labeled[seed_set(y, seed_per_class, np.random.default_rng(seed))] = True
    rng = np.random.default_rng([seed, 1])
    spent, accs = [], []
    for r in range(rounds + 1):
        model = fit(X[labeled], y[labeled])
        pred = classes[_proba(model, X_test, classes).argmax(axis=1)]
        spent.append(int(labeled.sum()))
        accs.append(float((pred == y_test).mean()))
        if r == rounds:
            break
        pool = np.flatnonzero(~labeled)
        b = min(batch, len(pool))
        if b == 0:
            break
        proba = _proba(model, X[pool], classes)
        mc = None
        if strategy == "mc_dropout":
            mc = _mc_input_dropout(model, X[pool], classes, rng, mc_passes, mc_dropout_rate)
        picks = st.select(
            strategy,
            proba=proba,
            embeddings=X[pool],
            batch_size=b,
            seed=int(rng.integers(2**31)),
            labeled_embeddings=X[labeled],
            mc_proba=mc,
        )
        chosen = pool[[p.index for p in picks]]
        if len(set(chosen.tolist())) != len(chosen):
            raise AssertionError(f"strategy {strategy!r} returned duplicate indices")
        labeled[chosen] = True
    return spent, accs


def run_benchmark(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    strategies: Sequence[str],
    seeds: Sequence[int],
    seed_per_class: int = 2,
    rounds: int = 15,
    batch: int = 50,
    fit: FitFn = default_fit,
    control: str = "random",
    log: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Run every strategy (plus the `control`, added if missing) for every seed; see module doc."""
    X = np.asarray(X, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    y, y_test = np.asarray(y), np.asarray(y_test)
    if X.ndim != 2 or X_test.ndim != 2 or X.shape[1] != X_test.shape[1]:
        raise ValueError(f"X {X.shape} and X_test {X_test.shape} must be 2-D with the same width")
    if len(y) != len(X) or len(y_test) != len(X_test):
        raise ValueError("labels and embeddings differ in length")
    if not seeds:
        raise ValueError("need at least one seed")
    names = list(dict.fromkeys([control, *strategies]))
    for name in names:
        if name not in st.STRATEGIES:
            raise ValueError(f"unknown strategy {name!r}; valid strategies: {', '.join(st.STRATEGIES)}")
    accuracy: dict[str, dict[int, list[float]]] = {}
    seconds: dict[str, float] = {}
    labels: list[int] = []
    for name in names:
        t0 = time.monotonic()
        accuracy[name] = {}
        for s in seeds:
            labels, accs = run_curve(
                X, y, X_test, y_test, strategy=name, seed=int(s),
                seed_per_class=seed_per_class, rounds=rounds, batch=batch, fit=fit,
            )  # fmt: skip
            accuracy[name][int(s)] = accs
            if log:
                log(f"{name:>18} seed {s}: acc {accs[0]:.3f} -> {accs[-1]:.3f} at {labels[-1]} labels")
        seconds[name] = time.monotonic() - t0
    settings = {
        "seed_per_class": seed_per_class,
        "rounds": rounds,
        "batch": batch,
        "pool": len(X),
        "test": len(X_test),
        "dim": int(X.shape[1]),
        "classes": len(np.unique(y)),
        "fit": getattr(fit, "__name__", repr(fit)),
    }
    return BenchmarkResult(
        strategies=names, seeds=[int(s) for s in seeds], labels=labels, accuracy=accuracy,
        settings=settings, seconds=seconds, control=control,
    )  # fmt: skip
