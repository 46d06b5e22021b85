"""What the Portal's server-rendered pages show, computed from the services' answers (their
``/v1`` JSON form): the active-learning learning curve as an SVG, the drift report in words, and
two model versions side by side. Pure functions, no I/O: the page handlers in ``portal.py`` call
the RPCs and the templates lay the results out.

The SVG is built here rather than by a chart library in the browser (no third-party script may
run in the Portal): every user string in it (model ids, notes) goes through ``escape``, and the
Content-Security-Policy forbids scripts anyway."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

#: Metrics where lower is better (the training service's ``evaluation.METRICS`` signs; a unit
#: test keeps them in step).
LOWER_IS_BETTER = frozenset({"ece", "log_loss"})
#: Order and names of the headline metrics on the comparison page (others follow, sorted).
METRIC_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "micro_f1": "micro F1",
    "macro_auc": "macro ROC-AUC",
    "ece": "ECE (calibration error)",
    "log_loss": "log loss",
    "n": "inputs",
}

#: The curation service's drift alert rule (``curation/drift.py``; a unit test keeps them in step).
DRIFT_ALPHA = 0.01
DRIFT_PSI_EMBEDDING_MIN = 0.1
DRIFT_PSI_PREDICTION_MIN = 0.25
DRIFT_PSI_MAJOR = 0.25
DRIFT_PSI_MIN_SAMPLES = 50
DRIFT_BINS = 10  # PSI bins (the reference's deciles)

PALETTE = ("#2457d6", "#d9822b", "#2e9d57", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d")


def metric_label(name: str) -> str:
    if name.startswith("test_"):
        return f"test {METRIC_NAMES.get(name[5:], name[5:])}"
    return METRIC_NAMES.get(name, name)


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}"


# -- the learning curve -----------------------------------------------------------------------------
def curve_metrics(rounds: list[dict[str, Any]]) -> list[str]:
    """Metrics the rounds carry, accuracy first (the default of the promotion rule)."""
    names = {k for r in rounds for k in (r.get("metrics") or {}) if k != "n"}
    return sorted(names, key=lambda k: (k != "accuracy", k.startswith("test_"), k))


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


@dataclass
class Curve:
    svg: Markup | None  # None: nothing to draw
    metric: str
    points: int
    skipped: int  # rounds without the metric (failed or still running)
    models: list[str] = field(default_factory=list)


def learning_curve(rounds: list[dict[str, Any]], metric: str = "", width: int = 720, height: int = 300) -> Curve:
    """Labels spent (a round's ``total_labels``) against the metric of the version each round
    trained, one line per model; a filled dot where the round's version was promoted, a hollow
    one where it was not; a dashed line for what was serving after each round. Each dot's
    ``<title>`` names the round, version, labels, value and verdict."""
    metric = metric or (curve_metrics(rounds) or ["accuracy"])[0]
    usable = [r for r in rounds if metric in (r.get("metrics") or {}) and math.isfinite(float(r["metrics"][metric]))]
    skipped = len(rounds) - len(usable)
    models = sorted({str(r.get("model_id", "")) for r in usable})
    if not usable:
        return Curve(None, metric, 0, skipped, models)
    left, right, top, bottom = 56, 150, 14, 44
    pw, ph = width - left - right, height - top - bottom
    xs = [float(r.get("total_labels", 0)) for r in usable]
    ys = [float(r["metrics"][metric]) for r in usable]
    ys += [float(r["previous_metrics"][metric]) for r in usable if metric in (r.get("previous_metrics") or {})]
    x_hi = max(xs) * 1.05 if max(xs) > 0 else 1.0
    y_lo, y_hi = min(ys), max(ys)
    pad = max((y_hi - y_lo) * 0.15, 0.025)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    if min(ys) >= 0.0 and max(ys) <= 1.0:  # a rate: stay inside [0, 1]
        y_lo, y_hi = max(0.0, y_lo), min(1.0, y_hi)

    def px(x: float) -> float:
        return left + pw * x / x_hi

    inset = 8  # points at the domain's edge stay off the frame

    def py(y: float) -> float:
        return top + inset + (ph - 2 * inset) * (1 - (y - y_lo) / (y_hi - y_lo))

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="curve" id="learning-curve" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="curve-title">',
        f'<title id="curve-title">Learning curve: {escape(metric_label(metric))} against labels spent</title>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>',
    ]
    y_digits = 2 if y_hi - y_lo >= 0.05 else 3
    for t in _nice_ticks(y_lo, y_hi):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.{y_digits}f}</text>')
    for t in _nice_ticks(0.0, x_hi):
        if t > x_hi:
            continue
        out.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{top + ph}" y2="{top + ph + 4}" class="axis"/>')
        out.append(f'<text x="{px(t):.1f}" y="{top + ph + 17}" text-anchor="middle">{t:g}</text>')
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle" class="label">labels spent (training labels of the round\'s version)</text>'
    )
    out.append(f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" class="label">{escape(metric_label(metric))}</text>')
    legend_y = top + 4
    for n, model in enumerate(models):
        color = PALETTE[n % len(PALETTE)]
        mine = sorted((r for r in usable if str(r.get("model_id", "")) == model), key=lambda r: (float(r.get("total_labels", 0)), int(r.get("round", 0))))
        pts = [(px(float(r.get("total_labels", 0))), py(float(r["metrics"][metric]))) for r in mine]
        if len(pts) > 1:
            out.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" fill="none" stroke="{color}" stroke-width="2"/>')
        # What served after each round: the candidate if promoted, else the previous version.
        serving = []
        for r in mine:
            if r.get("promoted"):
                serving.append((px(float(r.get("total_labels", 0))), py(float(r["metrics"][metric]))))
            elif metric in (r.get("previous_metrics") or {}):
                serving.append((px(float(r.get("total_labels", 0))), py(float(r["previous_metrics"][metric]))))
        if len(serving) > 1:
            out.append(
                f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in serving)}" fill="none" stroke="{color}" stroke-width="1" stroke-dasharray="4 3" class="serving"/>'  # noqa: E501
            )
        for r, (x, y) in zip(mine, pts):
            verdict = "promoted" if r.get("promoted") else "not promoted"
            tip = (
                f"round {r.get('round', '?')} · {model} v{r.get('candidate_version', '?')} · {int(r.get('total_labels', 0))} labels "
                f"(+{int(r.get('labels_spent', 0))}) · {metric_label(metric)} {fmt(float(r['metrics'][metric]))} · {verdict}"
            )
            if r.get("note"):
                tip += f" — {r['note']}"
            fill = color if r.get("promoted") else "#fff"
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{fill}" stroke="{color}" stroke-width="2" class="point" '
                f'data-round="{escape(str(r.get("round", "")))}"><title>{escape(tip)}</title></circle>'
            )
        lx = left + pw + 14
        out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{legend_y}" y2="{legend_y}" stroke="{color}" stroke-width="2"/>')
        name = model if len(model) <= 16 else model[:15] + "…"
        out.append(f'<text x="{lx + 24}" y="{legend_y + 4}"><title>{escape(model)}</title>{escape(name)}</text>')
        legend_y += 18
    lx = left + pw + 14
    legend_y += 6
    out.append(f'<circle cx="{lx + 9}" cy="{legend_y}" r="4" fill="#555" stroke="#555"/><text x="{lx + 24}" y="{legend_y + 4}">promoted</text>')
    out.append(
        f'<circle cx="{lx + 9}" cy="{legend_y + 18}" r="4" fill="#fff" stroke="#555" stroke-width="2"/><text x="{lx + 24}" y="{legend_y + 22}">not promoted</text>'  # noqa: E501
    )
    out.append(
        f'<line x1="{lx}" x2="{lx + 18}" y1="{legend_y + 36}" y2="{legend_y + 36}" stroke="#555" stroke-dasharray="4 3"/><text x="{lx + 24}" y="{legend_y + 40}">serving after</text>'  # noqa: E501
    )
    out.append("</svg>")
    return Curve(Markup("\n".join(out)), metric, len(usable), skipped, models)


# -- drift ------------------------------------------------------------------------------------------
@dataclass
class DriftView:
    alert: bool
    verdict: str
    rows: list[tuple[str, str, str]]  # (question, value, what it means)
    reasons: list[str]


def psi_band(psi: float) -> str:
    if psi >= DRIFT_PSI_MAJOR:
        return "major shift (≥ 0.25)"
    if psi >= 0.1:
        return "moderate shift (0.1–0.25)"
    return "small (< 0.1)"


def drift_view(report: dict[str, Any], stream: bool = False) -> DriftView:
    """The report in words: the verdict, and for each number the question it answers and the
    threshold the alert rule uses."""
    p, psi, cd = float(report.get("p_value", 1.0)), float(report.get("psi", 0.0)), float(report.get("centroid_distance", 0.0))
    n_ref, n_recent = int(report.get("reference_count", 0)), int(report.get("recent_count", 0))
    psi_pred = float(report.get("psi_predictions", 0.0))
    significant = p < DRIFT_ALPHA
    reasons = []
    if significant and psi >= DRIFT_PSI_EMBEDDING_MIN:
        reasons.append("the recent images differ from the reference (significant test and PSI ≥ 0.1)")
    if stream and psi_pred >= DRIFT_PSI_PREDICTION_MIN and n_recent >= DRIFT_PSI_MIN_SAMPLES:
        reasons.append("the mix of predicted concepts changed (class-mix PSI ≥ 0.25)")
    alert = bool(report.get("alert"))
    if stream:
        what = f"the last {n_recent} predictions of {report.get('model_id') or 'the policy model'}"
        ref = f"the training split of its version {report.get('model_version') or '?'} ({n_ref} inputs)"
    else:
        what, ref = f"the {n_recent} newest inputs", f"the train split ({n_ref} inputs)"
    if alert:
        verdict = f"Drift: {what} differ from {ref}."
    elif significant:
        verdict = f"No drift to act on: {what} differ measurably from {ref}, but the shift is small (PSI {fmt(psi, 2)} < 0.1)."
    else:
        verdict = f"No drift detected: the test finds no significant difference between {what} and {ref}."
    # PSI reads high on small samples even with no drift at all (≈ (bins − 1)·(1/n + 1/m)), which
    # is why the rule needs the significance test with it.
    noise = (DRIFT_BINS - 1) * (1 / max(n_recent, 1) + 1 / max(n_ref, 1))
    size = f"{psi_band(psi)}: population stability index, largest over random projections of the embeddings"
    if psi >= DRIFT_PSI_EMBEDDING_MIN and not significant:
        size += f"; not acted on: the test finds no difference, and PSI is inflated on samples this small (≈ {noise:.2f} expected here with no drift, more with empty bins)"  # noqa: E501
    rows = [
        (
            "Is there a difference?",
            f"p = {fmt(p, 3)}",
            ("yes: " if significant else "no: ") + f"two-sample test on the image embeddings (MMD, permutations); significant below {DRIFT_ALPHA:g}",
        ),
        ("How large is it?", f"PSI {fmt(psi, 3)}", size),
        ("How far apart are the centres?", fmt(cd, 3), "cosine distance between the mean embeddings (0: same direction)"),
    ]
    if stream:
        rows.append(
            (
                "Did the predicted concepts change?",
                f"PSI {fmt(psi_pred, 3)}",
                f"{psi_band(psi_pred)}: of the predicted-concept mix; alerts at ≥ {DRIFT_PSI_PREDICTION_MIN:g} with {DRIFT_PSI_MIN_SAMPLES}+ predictions",
            )
        )
    rows.append(("Compared", f"{n_recent} recent vs {n_ref} reference", f"{what} against {ref}"))
    return DriftView(alert, verdict, rows, reasons)


# -- two versions side by side ----------------------------------------------------------------------
@dataclass
class MetricRow:
    name: str
    label: str
    a: float | None
    b: float | None
    delta: str
    better: str  # "a", "b" or ""


@dataclass
class ConceptRow:
    concept: str
    a: dict[str, Any] | None
    b: dict[str, Any] | None
    delta_f1: str
    better: str


@dataclass
class Matrix:
    version: str
    order: list[str]
    rows: list[list[tuple[int, int, bool]]]  # (count, its share of the largest cell in tenths, diagonal)


@dataclass
class ComparisonView:
    a: str
    b: str
    count_a: int
    count_b: int
    metrics: list[MetricRow]
    concepts: list[ConceptRow]
    matrices: list[Matrix]
    best: str
    notes: list[str]


def _better(name: str, a: float | None, b: float | None) -> str:
    if a is None or b is None or a == b or name == "n":
        return ""
    lower = name in LOWER_IS_BETTER
    return "a" if (a < b) == lower else "b"


def _delta(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return ""
    return f"{b - a:+.3f}"


def _matrix(ev: dict[str, Any]) -> Matrix:
    order = list(ev.get("concept_order") or [])
    cm = [int(x) for x in ev.get("confusion_matrix") or []]
    n = len(order)
    top = max([1, *cm])
    rows = [[(cm[i * n + j], round(10 * cm[i * n + j] / top), i == j) for j in range(n)] for i in range(n)] if len(cm) == n * n else []
    return Matrix(str(ev.get("version", "")), order, rows)


def comparison_view(comparison: dict[str, Any], a: str, b: str) -> ComparisonView:
    """Versions ``a`` and ``b`` of a ``Comparison``: headline metrics with B − A and the better
    one (lower is better for ECE and log loss), per-concept precision / recall / F1, both
    confusion matrices, and a note when they were not measured on the same inputs."""
    evs = {str(e.get("version")): e for e in comparison.get("evaluations") or []}
    if a not in evs or b not in evs:
        missing = [v for v in (a, b) if v not in evs]
        raise KeyError(f"the comparison has no version {', '.join(missing)}")
    ea, eb = evs[a], evs[b]
    ma, mb = ea.get("metrics") or {}, eb.get("metrics") or {}
    names = [k for k in METRIC_NAMES if k in ma or k in mb] + sorted((set(ma) | set(mb)) - set(METRIC_NAMES))
    metrics = []
    for k in names:
        va, vb = ma.get(k), mb.get(k)
        metrics.append(
            MetricRow(k, METRIC_NAMES.get(k, k) + (" ↓" if k in LOWER_IS_BETTER else ""), va, vb, "" if k == "n" else _delta(va, vb), _better(k, va, vb))
        )
    ca = {c["concept"]: c for c in ea.get("concepts") or []}
    cb = {c["concept"]: c for c in eb.get("concepts") or []}
    order = list(ca) + [c for c in cb if c not in ca]
    concepts = []
    for c in order:
        fa, fb = (ca[c]["f1"] if c in ca else None), (cb[c]["f1"] if c in cb else None)
        concepts.append(ConceptRow(c, ca.get(c), cb.get(c), _delta(fa, fb), _better("f1", fa, fb)))
    notes = []
    if int(ea.get("count", 0)) != int(eb.get("count", 0)) or list(ea.get("concept_order") or []) != list(eb.get("concept_order") or []):
        notes.append(
            f"Measured on different sets: v{a} on {ea.get('count', 0)} inputs of its dataset's split, v{b} on "
            f"{eb.get('count', 0)} (each version is evaluated on the split of the dataset version it trained on). Compare with care."
        )
    return ComparisonView(
        a, b, int(ea.get("count", 0)), int(eb.get("count", 0)), metrics, concepts, [_matrix(ea), _matrix(eb)], str(comparison.get("best_version", "")), notes
    )
