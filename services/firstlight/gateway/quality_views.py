"""What the Portal's data-quality page shows, from the curation service's answers in their
``/v1`` JSON form: the health check's verdicts in words, its duplicate groups with the member
the service would keep, the leaks, outliers and flagged images, and a model version's worst
slices. Pure functions, no I/O (``portal_quality.py`` calls the RPCs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The health check's checks in the order the page lists them, with their names in words.
CHECK_NAMES = {
    "duplicates": "Duplicates",
    "leaks": "Leaks across splits",
    "corrupt_or_blank": "Corrupt or blank images",
    "outliers": "Outliers",
    "tiny_concepts": "Tiny concepts",
    "imbalance": "Class imbalance",
    "split_balance": "Concepts missing from a split",
    "label_errors": "Label errors",
}
STATUS_WORDS = {"pass": "passes", "warn": "warns", "fail": "fails", "skip": "skipped"}
#: Metrics shown beside a flagged image (the rest are in the JSON).
SHOWN_METRICS = ("brightness", "contrast", "blur", "blank_fraction")
SPLIT_NAMES = {0: "", 1: "train", 2: "validation", 3: "test"}


@dataclass(frozen=True)
class Member:
    input_id: str
    concepts: tuple[str, ...]
    split: str
    suggested: bool  # the member the service would keep


@dataclass(frozen=True)
class Group:
    kind: str
    similarity: float
    members: list[Member]

    @property
    def drop_count(self) -> int:
        return len(self.members) - 1


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    status: str
    message: str
    count: int
    input_ids: list[str]


@dataclass
class HealthView:
    status: str
    verdict: str
    examined: int
    checks: list[Check]
    groups: list[Group]
    leaks: list[Member]
    outliers: list[tuple[str, float]]
    flagged: list[tuple[str, list[str], list[tuple[str, float]]]]
    markdown: str = ""
    notes: list[str] = field(default_factory=list)


def _member(input_id: str, facts: dict[str, tuple[list[str], int]], suggested: bool = False) -> Member:
    concepts, split = facts.get(input_id, ([], 0))
    return Member(input_id, tuple(concepts), SPLIT_NAMES.get(split, ""), suggested)


def health_view(report: dict[str, Any], facts: dict[str, tuple[list[str], int]]) -> HealthView:
    """``facts``: input id → (concepts, split code) of the inputs shown in groups and leaks."""
    order = {name: k for k, name in enumerate(CHECK_NAMES)}
    checks = sorted(
        (
            Check(c["name"], CHECK_NAMES.get(c["name"], c["name"]), c["status"], c["message"], int(c.get("count", 0)), list(c.get("input_ids", [])))
            for c in report.get("checks", [])
        ),
        key=lambda c: (order.get(c.name, len(order)), c.name),
    )
    groups = [
        Group(g["kind"], float(g.get("similarity", 0.0)), [_member(i, facts, i == g["keep"]) for i in sorted(g["input_ids"], key=lambda i: i != g["keep"])])
        for g in report.get("duplicate_groups", [])
    ]
    leaks = next((c.input_ids for c in checks if c.name == "leaks"), [])
    status = report.get("status", "")
    failing = [c.title.lower() for c in checks if c.status == "fail"]
    warning = [c.title.lower() for c in checks if c.status == "warn"]
    examined = int(report.get("examined", 0))
    if failing:
        verdict = f"Fails: {', '.join(failing)}" + (f"; warns: {', '.join(warning)}" if warning else "") + f" ({examined} inputs checked)."
    elif warning:
        verdict = f"Passes with warnings: {', '.join(warning)} ({examined} inputs checked)."
    else:
        verdict = f"Every check passes ({examined} inputs checked)."
    flagged = [
        (f["input_id"], list(f.get("issues", [])), [(m, float(f["metrics"][m])) for m in SHOWN_METRICS if m in f.get("metrics", {})])
        for f in report.get("flagged_images", [])
    ]
    return HealthView(
        status=status,
        verdict=verdict,
        examined=examined,
        checks=checks,
        groups=groups,
        leaks=[_member(i, facts) for i in leaks],
        outliers=[(o["input_id"], float(o.get("score", 0.0))) for o in report.get("outliers", [])],
        flagged=flagged,
        markdown=report.get("markdown", ""),
    )


def ids_to_describe(report: dict[str, Any]) -> list[str]:
    """Inputs whose labels and split the page shows: duplicate-group members and leaks."""
    ids = [i for g in report.get("duplicate_groups", []) for i in g["input_ids"]]
    ids += [i for c in report.get("checks", []) if c["name"] == "leaks" for i in c.get("input_ids", [])]
    return list(dict.fromkeys(ids))


# the slices' ranking figures, the service's default first, with the words the page shows
RANK_BY = ("brier", "accuracy", "f1")
RANK_BY_WORDS = {"brier": "Brier score", "accuracy": "accuracy", "f1": "F1"}


@dataclass(frozen=True)
class SliceRow:
    name: str
    count: int
    accuracy: float
    low: float
    high: float
    gap: float
    confident: bool  # worse than overall with 95% confidence, by the figure ranked by
    note: str
    f1: float = 0.0
    f1_low: float = 0.0
    f1_high: float = 0.0
    brier: float = 0.0
    brier_low: float = 0.0
    brier_high: float = 0.0
    rank_gap: float = 0.0
    full: str = ""  # the untruncated name, when ``name`` is cut (shown on hover)


#: characters of a metadata value the slices table shows (values are free text, up to 4 KB)
SHOWN_VALUE = 40


def _cut(text: str, n: int = SHOWN_VALUE) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def slices_view(resp: dict[str, Any]) -> list[SliceRow]:
    # a service from before rank_by ranked by accuracy and sent no rank_gap
    gap_key = "rank_gap" if resp.get("rank_by") else "confident_gap"
    out = []
    for s in resp.get("slices", []):
        field_, value = s["field"], s["value"]
        if field_ == "concept":
            name, note = f"concept {value}", ""
        elif field_ == "cluster":
            name = f"embedding cluster {value}"
            note = f"mostly {s['majority_concept']} ({float(s.get('majority_share', 0.0)):.0%})" if s.get("majority_concept") else ""
        elif field_.startswith("q_"):
            name, note = f"{field_[2:]} quartile {value}", "q1 = lowest"
        elif field_.startswith("metadata."):  # user text: autoescaped by the template, cut here
            name, note = f"{_cut(field_.removeprefix('metadata.'))} = {_cut(value)}", "metadata"
        else:
            name, note = f"{field_} = {_cut(value)}", ""
        full = f"{field_} = {value}" if len(value) > SHOWN_VALUE or len(field_) > SHOWN_VALUE else ""
        out.append(
            SliceRow(
                name,
                int(s.get("count", 0)),
                float(s.get("accuracy", 0.0)),
                float(s.get("accuracy_low", 0.0)),
                float(s.get("accuracy_high", 0.0)),
                float(s.get("gap", 0.0)),
                float(s.get(gap_key, 0.0)) > 0,
                note,
                *(float(s.get(k, 0.0)) for k in ("f1", "f1_low", "f1_high", "brier", "brier_low", "brier_high", "rank_gap")),
                full=full,
            )
        )
    return out


def recorded_health(dataset: dict[str, Any]) -> str:
    """The health check recorded with a dataset version when it was frozen, in words."""
    h = dataset.get("health") or {}
    bad = [f"{c['name']} {c['status']}" for c in h.get("checks", []) if c.get("status") in ("warn", "fail")]
    text = f"Version {dataset.get('version', '')[:12]} of {dataset.get('id', '')} was checked when frozen: {h.get('status', '')}"
    if h.get("error"):
        text += f" ({h['error']})"
    elif bad:
        text += f" ({', '.join(bad)})"
    return text + ". Training on it warns when it fails (or refuses, with require_passing_check)."


#: The stored image-quality metrics the histogram can show (ingestion's names).
HISTOGRAM_METRICS = ("brightness", "contrast", "blur", "saturation", "noise", "highlight", "blank_fraction", "aspect_ratio", "width", "height", "grayscale")
HIST_W, HIST_H = 600, 160
#: Below the bars: the axis and its tick labels (the chart read without hovering every bar).
HIST_AXIS = 22
HIST_TICKS = 5


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    low: float
    high: float
    count: int


def histogram_view(resp: dict[str, Any]) -> dict[str, Any]:
    """Bars (SVG coordinates in a HIST_W × HIST_H box, tallest bar full height) of a
    GetQualityHistogram answer, with each bucket's range and count for its tooltip."""
    edges = [float(e) for e in resp.get("edges", [])]
    counts = [int(c) for c in resp.get("counts", [])]
    top = max(counts, default=0) or 1
    w = HIST_W / max(1, len(counts))
    bars = [
        Bar(round(k * w, 2), round(HIST_H - HIST_H * c / top, 2), round(max(w - 1, 1), 2), round(HIST_H * c / top, 2), edges[k], edges[k + 1], c)
        for k, c in enumerate(counts)
        if k + 1 < len(edges)
    ]
    # Labels at evenly spaced edges (the first and last edge always), anchored so none is cut.
    picks = sorted({round(j * (len(edges) - 1) / (HIST_TICKS - 1)) for j in range(HIST_TICKS)}) if len(edges) > 1 else []
    ticks = [(round(HIST_W * k / (len(edges) - 1), 2), f"{edges[k]:.3g}", "start" if k == 0 else "end" if k == len(edges) - 1 else "middle") for k in picks]
    return {
        "metric": resp.get("metric", ""),
        "bars": bars,
        "ticks": ticks,
        "tallest": max(counts, default=0),
        "measured": sum(counts),
        "unmeasured": int(resp.get("unmeasured", 0)),
        "low": edges[0] if edges else 0.0,
        "high": edges[-1] if edges else 0.0,
    }


@dataclass(frozen=True)
class UniqueTile:
    input_id: str
    score: float  # app-wide
    concept_score: float | None  # within its only concept
    concepts: tuple[str, ...]


def _tile(u: dict[str, Any]) -> UniqueTile:
    cs = u.get("concept_score")
    return UniqueTile(str(u["input_id"]), float(u.get("score", 0.0)), None if cs is None else float(cs), tuple(u.get("concepts", ())))


def uniqueness_view(resp: dict[str, Any]) -> dict[str, Any]:
    """ScoreUniqueness's JSON as the card shows it: the listed inputs as tiles, and a row of tiles
    per concept for its representatives (concepts by name)."""
    return {
        "inputs": [_tile(u) for u in resp.get("inputs", [])],
        "representatives": sorted((str(r["concept"]), [_tile(u) for u in r.get("inputs", [])]) for r in resp.get("representatives", [])),
        "total": int(resp.get("total_size", 0)),
        "examined": int(resp.get("examined", 0)),
        "scope": resp.get("scope", "app"),
        "order": resp.get("order", "unusual"),
    }
