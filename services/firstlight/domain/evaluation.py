"""Evaluation of a model version on a labeled split: metrics, reports, comparison, promotion.

``evaluate`` turns ground truth and predicted probabilities into an :class:`EvaluationReport`
(JSON-safe via ``to_dict``, never NaN: undefined values are ``None`` and the reason is in
``notes``). Renderers produce a confusion-matrix PNG (matplotlib, Agg canvas, no pyplot global
state), a Markdown report and a self-contained HTML report. ``compare`` puts versions side by
side; the promotion rule is :mod:`firstlight.domain.promotion`.

Conventions:

- Single-label (``multilabel=False``): the prediction is the arg-max concept; ``accuracy`` is
  top-1 accuracy; calibration uses the top-1 confidence.
- Multi-label: a concept is predicted when its probability >= ``threshold``; ``accuracy`` is
  subset accuracy (the predicted set equals the true set); calibration uses every
  (input, concept) probability against its 0/1 truth; the "confusion matrix" counts
  (true concept, predicted concept) pairs over inputs (its diagonal is the true positives).
- Macro averages are over the concepts present in ``y_true`` (support > 0); concepts without
  support are listed in ``notes``. Macro ROC-AUC is one-vs-rest over concepts that have both
  positives and negatives in ``y_true``; others are listed in ``auc_skipped``.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firstlight.domain.errors import EvaluationError

ECE_BINS = 15
# metric name -> +1 if higher is better, -1 if lower is better
METRICS: dict[str, int] = {
    "accuracy": 1,
    "macro_f1": 1,
    "micro_f1": 1,
    "macro_precision": 1,
    "macro_recall": 1,
    "macro_auc": 1,
    "ece": -1,
    "log_loss": -1,
}
_EPS = 1e-15


@dataclass
class ConceptMetrics:
    concept: str
    precision: float
    recall: float
    f1: float
    support: int  # inputs truly of this concept
    predicted: int  # inputs predicted as this concept
    auc: float | None  # one-vs-rest ROC-AUC; None when y_true has no positives or no negatives


@dataclass
class ReliabilityBin:
    lower: float
    upper: float
    count: int
    confidence: float | None  # mean predicted probability in the bin (None if empty)
    accuracy: float | None  # fraction correct in the bin (None if empty)


@dataclass
class EvaluationReport:
    concepts: list[str]
    n: int
    multilabel: bool
    threshold: float | None  # multi-label decision threshold (None for single-label)
    accuracy: float  # top-1 (single-label) or subset accuracy (multi-label)
    micro_f1: float
    macro_f1: float
    macro_precision: float
    macro_recall: float
    macro_auc: float | None
    auc_skipped: list[str]
    per_concept: list[ConceptMetrics]
    confusion: list[list[int]]  # [K][K], rows = true, columns = predicted
    ece: float
    reliability: list[ReliabilityBin]
    log_loss: float
    notes: list[str] = field(default_factory=list)

    def metric(self, name: str) -> float | None:
        if name not in METRICS:
            raise EvaluationError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
        value = getattr(self, name)
        return None if value is None else float(value)

    def concept(self, name: str) -> ConceptMetrics:
        for m in self.per_concept:
            if m.concept == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (plain floats/ints/str/None; no NaN)."""
        return _json_safe(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvaluationReport:
        d = dict(d)
        d["per_concept"] = [ConceptMetrics(**m) for m in d["per_concept"]]
        d["reliability"] = [ReliabilityBin(**b) for b in d["reliability"]]
        return cls(**d)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


# -- metrics -------------------------------------------------------------------------------


def _truth_matrix(y_true: Sequence[str | Sequence[str]], concepts: list[str], multilabel: bool) -> np.ndarray:
    index = {c: k for k, c in enumerate(concepts)}
    T = np.zeros((len(y_true), len(concepts)), dtype=bool)
    for i, labs in enumerate(y_true):
        labs = [labs] if isinstance(labs, str) else list(labs)
        for c in labs:
            if c not in index:
                raise EvaluationError(f"input {i} is labeled {c!r}, which is not one of the model's concepts")
            T[i, index[c]] = True
        if not multilabel and T[i].sum() != 1:
            raise EvaluationError(
                f"input {i} has {int(T[i].sum())} concepts; single-label evaluation needs exactly one (pass multilabel=True for multi-label data)"
            )
    return T


def roc_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Binary ROC-AUC (Mann-Whitney, ties count one half); None without both classes."""
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _reliability(conf: np.ndarray, correct: np.ndarray, bins: int) -> tuple[float, list[ReliabilityBin]]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin b holds (edges[b], edges[b+1]]; a confidence of exactly 0 goes to the first bin
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    out = []
    ece = 0.0
    for b in range(bins):
        sel = which == b
        count = int(sel.sum())
        if count:
            c, a = float(conf[sel].mean()), float(correct[sel].mean())
            ece += count / conf.size * abs(a - c)
            out.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), count, c, a))
        else:
            out.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), 0, None, None))
    return float(ece), out


def evaluate(
    y_true: Sequence[str | Sequence[str]],
    proba: np.ndarray,
    concepts: Sequence[str],
    *,
    multilabel: bool = False,
    threshold: float = 0.5,
) -> EvaluationReport:
    """Evaluate predictions ``proba`` [N, K] (columns in ``concepts`` order) against ``y_true``
    (a concept name per input, or a list of names per input)."""
    concepts = [str(c) for c in concepts]
    K = len(concepts)
    if K == 0 or len(set(concepts)) != K:
        raise EvaluationError("concepts must be non-empty and unique")
    P = np.asarray(proba, dtype=np.float64)
    if P.ndim != 2 or P.shape != (len(y_true), K):
        raise EvaluationError(f"proba must have shape [{len(y_true)}, {K}] (inputs × concepts), got {list(P.shape)}")
    if P.shape[0] == 0:
        raise EvaluationError("nothing to evaluate: no inputs")
    if not np.isfinite(P).all() or P.min() < -1e-6 or P.max() > 1 + 1e-6:
        raise EvaluationError("proba must be probabilities in [0, 1] (finite)")
    P = np.clip(P, 0.0, 1.0)
    if multilabel and not 0.0 < threshold < 1.0:
        raise EvaluationError(f"threshold must be in (0, 1), got {threshold!r}")
    T = _truth_matrix(y_true, concepts, multilabel)
    n = T.shape[0]
    notes: list[str] = []

    if multilabel:
        pred = P >= threshold  # noqa: SIM300 - P is the probability matrix, not a constant
        accuracy = float((pred == T).all(axis=1).mean())
        confusion = T.T.astype(np.int64) @ pred.astype(np.int64)
        conf = P.ravel()
        correct = T.ravel().astype(np.float64)
        loss = float(-np.mean(T * np.log(np.clip(P, _EPS, 1)) + (~T) * np.log(np.clip(1 - P, _EPS, 1))))
    else:
        truth = T.argmax(axis=1)
        top = P.argmax(axis=1)
        pred = np.zeros_like(T)
        pred[np.arange(n), top] = True
        accuracy = float((top == truth).mean())
        confusion = np.zeros((K, K), dtype=np.int64)
        np.add.at(confusion, (truth, top), 1)
        conf = P[np.arange(n), top]
        correct = (top == truth).astype(np.float64)
        row_sums = P.sum(axis=1, keepdims=True)
        Pn = P / np.where(row_sums > 0, row_sums, 1.0)  # log loss on renormalised rows
        loss = float(-np.mean(np.log(np.clip(Pn[np.arange(n), truth], _EPS, 1))))

    tp = (pred & T).sum(axis=0)
    fp = (pred & ~T).sum(axis=0)
    fn = (~pred & T).sum(axis=0)
    support = T.sum(axis=0)
    predicted = pred.sum(axis=0)
    per_concept = []
    for k, c in enumerate(concepts):
        prec = tp[k] / predicted[k] if predicted[k] else 0.0
        rec = tp[k] / support[k] if support[k] else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_concept.append(ConceptMetrics(c, float(prec), float(rec), float(f1), int(support[k]), int(predicted[k]), roc_auc(T[:, k], P[:, k])))

    present = [m for m in per_concept if m.support > 0]
    absent = [m.concept for m in per_concept if m.support == 0]
    if absent:
        notes.append(f"{len(absent)} concept(s) have no input in this evaluation set and are left out of the macro averages: {', '.join(absent)}")
    if not present:  # multi-label only: every input has an empty label set
        notes.append("no concept has a positive input: macro precision/recall/F1 are reported as 0")
    macro_f1 = float(np.mean([m.f1 for m in present])) if present else 0.0
    macro_p = float(np.mean([m.precision for m in present])) if present else 0.0
    macro_r = float(np.mean([m.recall for m in present])) if present else 0.0
    denom = 2 * tp.sum() + fp.sum() + fn.sum()
    micro_f1 = float(2 * tp.sum() / denom) if denom else 0.0
    aucs = [m.auc for m in per_concept if m.auc is not None]
    auc_skipped = [m.concept for m in per_concept if m.auc is None]
    macro_auc = float(np.mean(aucs)) if aucs else None
    if auc_skipped:
        notes.append(f"ROC-AUC undefined (no positive or no negative input) and skipped for: {', '.join(auc_skipped)}" + ("" if aucs else "; no macro ROC-AUC"))
    ece, bins = _reliability(conf, correct, ECE_BINS)

    return EvaluationReport(
        concepts=concepts,
        n=n,
        multilabel=multilabel,
        threshold=float(threshold) if multilabel else None,
        accuracy=accuracy,
        micro_f1=micro_f1,
        macro_f1=macro_f1,
        macro_precision=macro_p,
        macro_recall=macro_r,
        macro_auc=macro_auc,
        auc_skipped=auc_skipped,
        per_concept=per_concept,
        confusion=confusion.astype(int).tolist(),
        ece=ece,
        reliability=bins,
        log_loss=loss,
        notes=notes,
    )


def headline(report: EvaluationReport) -> dict[str, float]:
    """The headline numbers as plain floats (progress messages, version lists); undefined ones
    (macro ROC-AUC without any evaluable concept) are left out."""
    out = {"n": float(report.n)}
    for name in ("accuracy", "macro_f1", "micro_f1", "macro_auc", "ece", "log_loss"):
        value = getattr(report, name)
        if value is not None:
            out[name] = float(value)
    return out


# -- confusion matrix image ------------------------------------------------------------------


def _short(name: str, width: int = 24) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def confusion_matrix_png(report: EvaluationReport, title: str = "Confusion matrix") -> bytes:
    """PNG bytes: counts annotated, colours normalised per true concept (row), labels rotated."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(report.confusion, dtype=np.float64)
    K = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = min(max(4.5, 0.45 * K + 2.5), 30.0)
    fig = Figure(figsize=(side + 1.2, side), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("fraction of the true concept's inputs")
    labels = [_short(c) for c in report.concepts]
    ax.set_xticks(range(K), labels=labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(K), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if K <= 40:
        size = max(5.0, min(10.0, 120.0 / max(K, 1)))
        for i in range(K):
            for j in range(K):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=size, color="white" if norm[i, j] > 0.55 else "black")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render_confusion_matrix_png(report: EvaluationReport, path: str | Path, title: str = "Confusion matrix") -> Path:
    path = Path(path)
    path.write_bytes(confusion_matrix_png(report, title))
    return path


# -- Markdown / HTML -----------------------------------------------------------------------------


def _f(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _md(s: Any) -> str:
    return str(s).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _summary_rows(r: EvaluationReport) -> list[tuple[str, str]]:
    auc_over = len(r.concepts) - len(r.auc_skipped)
    rows = [
        ("inputs evaluated", str(r.n)),
        ("subset accuracy" if r.multilabel else "accuracy (top-1)", _f(r.accuracy)),
        ("macro F1", _f(r.macro_f1)),
        ("micro F1", _f(r.micro_f1)),
        ("macro precision", _f(r.macro_precision)),
        ("macro recall", _f(r.macro_recall)),
        (f"macro ROC-AUC (over {auc_over} concepts)", _f(r.macro_auc)),
        (f"ECE ({len(r.reliability)} bins)", _f(r.ece)),
        ("log loss", _f(r.log_loss)),
    ]
    if r.multilabel:
        rows.append(("decision threshold", _f(r.threshold, 2)))
    return rows


def render_report_markdown(
    report: EvaluationReport,
    title: str,
    extra: Mapping[str, Any] | None = None,
    *,
    confusion_png: str | None = None,
) -> str:
    """Markdown report: summary metrics, ``extra`` (e.g. model version, dataset version,
    settings), per-concept table, confusion matrix table, calibration bins, notes.
    ``confusion_png``: relative link to the PNG from :func:`render_confusion_matrix_png`."""
    r = report
    out = [f"# {_md(title)}", ""]
    out += ["| metric | value |", "|---|---:|"]
    out += [f"| {_md(k)} | {v} |" for k, v in _summary_rows(r)]
    if extra:
        out += ["", "## Run", "", "| key | value |", "|---|---|"]
        out += [f"| {_md(k)} | {_md(v)} |" for k, v in extra.items()]
    out += ["", "## Per concept", "", "| concept | precision | recall | F1 | support | predicted | ROC-AUC |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m in r.per_concept:
        out.append(f"| {_md(m.concept)} | {_f(m.precision)} | {_f(m.recall)} | {_f(m.f1)} | {m.support} | {m.predicted} | {_f(m.auc)} |")
    out += ["", "## Confusion matrix", ""]
    out.append("Rows are the true concept, columns the predicted one" + (" (multi-label: counts of (true, predicted) pairs)." if r.multilabel else "."))
    out += ["", "| true \\ predicted | " + " | ".join(_md(c) for c in r.concepts) + " |", "|---|" + "---:|" * len(r.concepts)]
    for c, row in zip(r.concepts, r.confusion):
        out.append(f"| **{_md(c)}** | " + " | ".join(str(v) for v in row) + " |")
    if confusion_png:
        out += ["", f"![confusion matrix]({confusion_png})"]
    out += [
        "",
        "## Calibration",
        "",
        f"Expected calibration error: {_f(r.ece)} ({len(r.reliability)} equal-width bins; "
        + ("every concept probability against its 0/1 truth)." if r.multilabel else "top-1 confidence against correctness)."),
        "",
    ]
    out += ["| bin | inputs | mean confidence | accuracy |", "|---|---:|---:|---:|"]
    for b in r.reliability:
        if b.count:
            out.append(f"| {b.lower:.3f}–{b.upper:.3f} | {b.count} | {_f(b.confidence)} | {_f(b.accuracy)} |")
    if r.notes:
        out += ["", "## Notes", ""] + [f"- {_md(n)}" for n in r.notes]
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border:1px solid #ccc;padding:.25rem .6rem}
th{background:#f2f4f7;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee}.note{color:#555}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in header)
    body = []
    for row in rows:
        cells = "".join(f'<td class="n">{html.escape(str(v))}</td>' if i >= numeric_from else f"<td>{html.escape(str(v))}</td>" for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def render_report_html(report: EvaluationReport, title: str, extra: Mapping[str, Any] | None = None) -> str:
    """Self-contained HTML report (the confusion matrix PNG is embedded as base64)."""
    r = report
    png = base64.b64encode(confusion_matrix_png(r, title)).decode("ascii")
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>',
        f"<h1>{html.escape(title)}</h1>",
        _table(["metric", "value"], _summary_rows(r)),
    ]
    if extra:
        parts += ["<h2>Run</h2>", _table(["key", "value"], [(k, v) for k, v in extra.items()], numeric_from=2)]
    parts += [
        "<h2>Per concept</h2>",
        _table(
            ["concept", "precision", "recall", "F1", "support", "predicted", "ROC-AUC"],
            [(m.concept, _f(m.precision), _f(m.recall), _f(m.f1), m.support, m.predicted, _f(m.auc)) for m in r.per_concept],
        ),
        "<h2>Confusion matrix</h2>",
        '<p class="note">Rows are the true concept, columns the predicted one; colours are normalised per row.</p>',
        f'<img alt="confusion matrix" src="data:image/png;base64,{png}">',
        _table(["true \\ predicted", *r.concepts], [(c, *row) for c, row in zip(r.concepts, r.confusion)]),
        "<h2>Calibration</h2>",
        f"<p>Expected calibration error: {_f(r.ece)}</p>",
        _table(
            ["bin", "inputs", "mean confidence", "accuracy"],
            [(f"{b.lower:.3f}–{b.upper:.3f}", b.count, _f(b.confidence), _f(b.accuracy)) for b in r.reliability if b.count],
        ),
    ]
    if r.notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in r.notes] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- comparison and promotion ------------------------------------------------------------------

COMPARED = ("accuracy", "macro_f1", "macro_auc", "ece", "log_loss")


@dataclass
class ComparisonRow:
    version: str
    n: int
    accuracy: float
    macro_f1: float
    macro_auc: float | None
    ece: float
    log_loss: float


@dataclass
class Comparison:
    rows: list[ComparisonRow]
    metric: str  # the metric that decides ``best``
    best: str | None  # best version on ``metric`` (ties: the first listed)
    best_per_metric: dict[str, str]  # every compared metric -> its best version
    notes: list[str] = field(default_factory=list)

    def best_by(self, metric: str) -> str | None:
        if metric not in COMPARED:
            raise EvaluationError(f"cannot compare on {metric!r}; use one of {', '.join(COMPARED)}")
        return self.best_per_metric.get(metric)

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))


def top1_predictions(input_ids: Sequence[str], y_true: Sequence[Sequence[str]], proba: np.ndarray, concepts: list[str]) -> list[tuple[str, str, str, float]]:
    """(input id, true concept, predicted concept, its probability) per single-label input: the
    pairs behind each cell of the confusion matrix (rows = true, columns = top prediction; the
    true concept is the first of the input's concepts in ``concepts`` order, as in ``evaluate``)."""
    P = np.asarray(proba)
    top = P.argmax(axis=1) if len(P) else np.zeros(0, dtype=np.int64)
    index = {c: k for k, c in enumerate(concepts)}
    out = []
    for i, (input_id, labs) in enumerate(zip(input_ids, y_true)):
        truth = min(index[c] for c in ([labs] if isinstance(labs, str) else labs))
        out.append((input_id, concepts[truth], concepts[int(top[i])], float(P[i, top[i]])))
    return out


def compare(reports: Mapping[str, EvaluationReport], metric: str = "accuracy") -> Comparison:
    """Versions side by side (in the mapping's order); ``best`` is the best version on
    ``metric`` (ties: the first listed), ``best_per_metric`` the best on each compared metric."""
    if not reports:
        raise EvaluationError("nothing to compare")
    if metric not in COMPARED:
        raise EvaluationError(f"cannot compare on {metric!r}; use one of {', '.join(COMPARED)}")
    rows = [ComparisonRow(v, r.n, r.accuracy, r.macro_f1, r.macro_auc, r.ece, r.log_loss) for v, r in reports.items()]
    best: dict[str, str] = {}
    for name in COMPARED:
        sign = METRICS[name]
        scored = [(row.version, getattr(row, name)) for row in rows if getattr(row, name) is not None]
        if scored:
            top = max(sign * value for _, value in scored)
            best[name] = next(v for v, value in scored if sign * value == top)
    notes = []
    if len({r.n for r in rows}) > 1 or len({tuple(r.concepts) for r in reports.values()}) > 1:
        notes.append("the versions were evaluated on different sets (inputs or concepts differ): compare with care")
    return Comparison(rows, metric, best.get(metric), best, notes)


def render_comparison_markdown(comparison: Comparison, title: str = "Model versions") -> str:
    """Side-by-side table; the best value per metric in bold."""
    labels = {"accuracy": "accuracy", "macro_f1": "macro F1", "macro_auc": "macro ROC-AUC", "ece": "ECE ↓", "log_loss": "log loss ↓"}
    out = [f"# {_md(title)}", "", "| version | inputs | " + " | ".join(labels[m] for m in COMPARED) + " |", "|---|---:|" + "---:|" * len(COMPARED)]
    for row in comparison.rows:
        cells = []
        for m in COMPARED:
            text = _f(getattr(row, m))
            cells.append(f"**{text}**" if comparison.best_per_metric.get(m) == row.version else text)
        out.append(f"| {_md(row.version)} | {row.n} | " + " | ".join(cells) + " |")
    out.append("")
    if comparison.best is not None:
        out += [f"Best version by {labels[comparison.metric]}: **{_md(comparison.best)}**", ""]
    out += [f"- best {labels[m]}: {_md(v)}" for m, v in comparison.best_per_metric.items()]
    out += [f"- {_md(n)}" for n in comparison.notes]
    return "\n".join(out) + "\n"
