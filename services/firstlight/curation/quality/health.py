"""The health check before training: one report, pass / warn / fail per check, from the
detectors of this package (and label errors from ``curation.label_errors`` when given).

Inputs are rows of one app or dataset version; every argument but ``labels`` is optional and a
check whose data is missing is reported as ``skip``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from firstlight.curation.quality import duplicates as dup
from firstlight.curation.quality import outliers, splits
from firstlight.media import image_metrics

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


@dataclass
class Thresholds:
    near_duplicate_warn: float = 0.01  # share of rows in a duplicate group beyond its kept member
    near_duplicate_fail: float = 0.05
    leak_fail: int = 1  # any held-out row with a copy in another split fails
    tiny_concept_warn: int = 10  # labeled inputs per concept
    tiny_concept_fail: int = 3
    imbalance_warn: float = 5.0  # largest / smallest concept
    imbalance_fail: float = 20.0
    label_error_warn: float = 0.02
    label_error_fail: float = 0.10
    outlier_z: float = 4.0  # robust z of the kNN distance
    outlier_warn: float = 0.01
    outlier_fail: float = 0.05
    bad_image_warn: float = 0.0  # any blank/corrupt image warns
    bad_image_fail: float = 0.05


@dataclass
class Check:
    name: str
    status: str
    message: str
    count: int = 0
    rows: list[int] = field(default_factory=list)  # examples (row indices), worst first where ranked


@dataclass
class HealthReport:
    checks: list[Check]
    n: int

    @property
    def status(self) -> str:
        states = {c.status for c in self.checks}
        return FAIL if FAIL in states else WARN if WARN in states else PASS

    def to_markdown(self, ids: Sequence[str] | None = None) -> str:
        lines = [f"Health check: **{self.status}** ({self.n} inputs)", "", "| check | status | count | detail |", "|---|---|---|---|"]
        for c in self.checks:
            lines.append(f"| {c.name} | {c.status} | {c.count} | {c.message} |")
        return "\n".join(lines)


def _grade(value: float, warn: float, fail: float, higher_is_worse: bool = True) -> str:
    if higher_is_worse:
        return FAIL if value >= fail else WARN if value > warn else PASS
    return FAIL if value <= fail else WARN if value < warn else PASS


def robust_outliers(scores: np.ndarray, z: float) -> np.ndarray:
    """Rows whose score is more than ``z`` robust σ (MAD) above the median."""
    s = np.asarray(scores, np.float64)
    med = np.nanmedian(s)
    mad = 1.4826 * np.nanmedian(np.abs(s - med)) or 1e-9
    return np.flatnonzero((s - med) / mad > z)


def health_check(
    labels: Sequence[str],
    *,
    embeddings: np.ndarray | None = None,
    split_of: Sequence[str] | None = None,
    content_hashes: Sequence[str] | None = None,
    perceptual_hashes: Sequence[tuple[int, int]] | None = None,
    thumbnails: np.ndarray | None = None,
    canvases: np.ndarray | None = None,
    quality: Sequence[image_metrics.ImageQuality] | None = None,
    corrupt: Sequence[int] = (),
    label_error_rows: Sequence[int] | None = None,
    group_of: Sequence[str] | None = None,
    threshold: float = dup.DEFAULT_THRESHOLD,
    t: Thresholds | None = None,
) -> tuple[HealthReport, dict[str, object]]:
    """(report, details: the duplicate groups, leaks, outlier scores, issues per row) for rows
    with ``labels`` ("" = unlabeled)."""
    t = t or Thresholds()
    n = len(labels)
    checks: list[Check] = []
    details: dict[str, object] = {}
    nb = None
    if embeddings is not None and n > 1:
        from firstlight.curation.quality.neighbors import knn

        nb = knn(embeddings, outliers.DEFAULT_K)

    issues = image_metrics.flag_issues(quality) if quality is not None else None
    blank = [i for i, x in enumerate(issues or []) if "blank" in x]
    # duplicates
    if nb is not None or content_hashes is not None or perceptual_hashes is not None:
        groups = dup.find_duplicates(
            n=n,
            neighbors=nb,
            content_hashes=content_hashes,
            perceptual_hashes=perceptual_hashes,
            threshold=threshold,
            group_of=group_of,
            embeddings=embeddings,
            skip=blank,
            thumbnails=thumbnails,
            canvases=canvases,
        )  # keep in step with duplicate_groups below
        extra = sum(len(g.members) - 1 for g in groups)
        exact = sum(g.exact_copies for g in groups)
        share = extra / max(1, n)
        checks.append(
            Check(
                "duplicates",
                _grade(share, t.near_duplicate_warn, t.near_duplicate_fail),
                f"{len(groups)} groups, {extra} redundant inputs ({share:.1%}; {exact} exact copies)",
                extra,
                [i for g in groups for i in g.members if i != g.keep][:50],
            )
        )
        details["duplicate_groups"] = groups
        # leaks
        if split_of is not None:
            keys = group_of if group_of is not None else None
            gids = splits.group_of_rows(n, [g.members for g in groups], keys)
            by: dict[int, list[int]] = {}
            for i, g in enumerate(gids):
                by.setdefault(g, []).append(i)
            found = splits.leaks([m for m in by.values() if len(m) > 1], split_of)
            rows = sorted(splits.leaked_rows(found))
            checks.append(
                Check(
                    "leaks",
                    FAIL if len(rows) >= t.leak_fail else PASS,
                    f"{len(found)} groups span several splits; {len(rows)} held-out inputs have a copy in another split",
                    len(rows),
                    rows[:50],
                )
            )
            details["leaks"] = found
        else:
            checks.append(Check("leaks", SKIP, "no splits given"))
    else:
        checks.append(Check("duplicates", SKIP, "no embeddings or hashes"))
        checks.append(Check("leaks", SKIP, "no embeddings or hashes"))

    # tiny concepts and imbalance
    counts = Counter(c for c in labels if c)
    if counts:
        small = sorted((c for c, m in counts.items() if m < t.tiny_concept_warn), key=lambda c: counts[c])
        worst = min(counts.values())
        status = FAIL if worst < t.tiny_concept_fail else WARN if small else PASS
        checks.append(Check("tiny_concepts", status, ", ".join(f"{c}: {counts[c]}" for c in small[:10]) or f"smallest has {worst}", len(small)))
        ratio = max(counts.values()) / worst if len(counts) > 1 else 1.0
        checks.append(Check("imbalance", _grade(ratio, t.imbalance_warn, t.imbalance_fail), f"largest / smallest concept = {ratio:.1f}", 0))
        kept = [i for i, c in enumerate(labels) if c]
        balance = splits.class_balance([labels[i] for i in kept], [split_of[i] for i in kept] if split_of is not None else None)
        details["balance"] = balance
        if split_of is not None:
            missing = {s: v["missing"] for s, v in balance["splits"].items() if s in ("train", "validation", "test") and v["missing"]}  # type: ignore[union-attr]
            text = "; ".join(f"{s}: no {', '.join(m[:5])}" for s, m in missing.items())
            checks.append(Check("split_balance", WARN if missing else PASS, text or "every concept in every split", sum(len(m) for m in missing.values())))
    else:
        checks.append(Check("tiny_concepts", SKIP, "no labeled inputs"))
        checks.append(Check("imbalance", SKIP, "no labeled inputs"))

    # label errors
    if label_error_rows is not None:
        labeled = max(1, sum(1 for c in labels if c))
        share = len(label_error_rows) / labeled
        checks.append(
            Check(
                "label_errors",
                _grade(share, t.label_error_warn, t.label_error_fail),
                f"{len(label_error_rows)} suspected wrong labels ({share:.1%} of labeled)",
                len(label_error_rows),
                list(label_error_rows)[:50],
            )
        )
    else:
        checks.append(Check("label_errors", SKIP, "not computed"))

    # outliers
    if nb is not None and n > 10:
        score = outliers.outlier_scores(neighbors=nb, k=outliers.DEFAULT_K)
        rows = robust_outliers(score, t.outlier_z)
        rows = rows[np.argsort(-score[rows])]
        share = len(rows) / n
        checks.append(
            Check(
                "outliers",
                _grade(share, t.outlier_warn, t.outlier_fail),
                f"{len(rows)} inputs far from the rest (kNN distance > {t.outlier_z} robust σ above the median)",
                len(rows),
                rows[:50].tolist(),
            )
        )
        details["outlier_scores"] = score
    else:
        checks.append(Check("outliers", SKIP, "needs more than 10 embedded inputs"))

    # corrupt / blank / dark / blurry images
    if issues is not None:
        bad = sorted(set(corrupt) | {i for i, x in enumerate(issues) if "blank" in x})
        share = len(bad) / max(1, n)
        status = FAIL if share >= t.bad_image_fail else WARN if share > t.bad_image_warn else PASS
        other = Counter(x for xs in issues for x in xs if x != "blank")
        extra = "; " + ", ".join(f"{k}: {v}" for k, v in sorted(other.items())) if other else ""
        checks.append(Check("corrupt_or_blank", status, f"{len(corrupt)} corrupt, {len(bad) - len(set(corrupt))} blank{extra}", len(bad), bad[:50]))
        details["image_issues"] = issues
    elif corrupt:
        checks.append(Check("corrupt_or_blank", FAIL, f"{len(corrupt)} corrupt", len(corrupt), list(corrupt)[:50]))
    else:
        checks.append(Check("corrupt_or_blank", SKIP, "no image metrics"))
    return HealthReport(checks, n), details


def duplicate_groups(
    embeddings: np.ndarray,
    *,
    content_hashes: Sequence[str] | None = None,
    thumbnails: np.ndarray | None = None,
    canvases: np.ndarray | None = None,
    threshold: float = dup.DEFAULT_THRESHOLD,
) -> list[dup.DuplicateGroup]:
    """The duplicate groups as :func:`health_check` finds them (the same neighbours and
    threshold), without the other checks: what a split by duplicate group keeps together, so
    the leaks check of the version it freezes passes. Blank images are not skipped here: the
    check without pixels groups them too, and all of them in one split leaks nothing."""
    from firstlight.curation.quality.neighbors import knn

    n = len(embeddings)
    if n < 2:
        return []
    return dup.find_duplicates(
        n=n,
        neighbors=knn(embeddings, outliers.DEFAULT_K),
        content_hashes=content_hashes,
        threshold=threshold,
        embeddings=embeddings,
        thumbnails=thumbnails,
        canvases=canvases,
    )
