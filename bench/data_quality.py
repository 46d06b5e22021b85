"""Planted-problem measurement of the data-quality detectors (issue 19), and their 100k scale check.

    python -m bench.data_quality [--per-class 340] [--seed 0] [--scale 100000] [--out docs/results/data_quality.md]
    python -m bench.data_quality --slice-sweep 0 1 2 --draws 5   # worst-slice ranking per figure

1. A copy of animal-mnist (exact duplicates inside the package removed first), 9 classes kept,
   one held out; split 70/15/15. Planted:
   - 5 % near-duplicates of random originals: crops (85-93 %), horizontal flips, JPEG
     re-encodes (quality 30-70), small colour shifts (per-channel gain 0.85-1.15, offset ±15);
     half land in the original's split, half in another split (leaks), plus exact byte copies
     across splits (leaks too);
   - 2 % images of the held-out class (outliers), labeled with a random kept concept;
   - blurred (Gaussian σ 1.2-2), dark (×0.08-0.15) and blank (flat colour + faint noise) images;
   - a weak concept: 30 % of its train labels (copies included) moved to its most similar concept (by centroid
     cosine of the real embeddings).
2. Real EfficientNet-Lite0 embeddings (firstlight.models.backbone, 224 px, the embedding
   service's preprocessing), cached in .cache/dq/.
3. Precision / recall per detector against the planted truth; AUROC of the outlier score for the
   held-out class; the worst slice of a transfer classifier trained on train, evaluated on test
   (ranked by the product's default, the Brier score; ``--slice-sweep`` compares the figures
   over seeds and draws of the moved labels).
4. Scale: duplicate + outlier passes over 100,000 embeddings derived from the real ones
   (bench.common.jittered, as the search bench derives its 10k set) with planted copies.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from firstlight.curation.quality import crops, health, outliers, slices, splits
from firstlight.curation.quality import duplicates as dup
from firstlight.curation.quality.neighbors import knn, normalize
from firstlight.media import image_metrics

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "dq"
HELD_OUT = "giraffe"
SPLIT_NAMES = ("train", "validation", "test")


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def variant(rgb: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    im = Image.fromarray(rgb)
    h, w = rgb.shape[:2]
    if kind == "flip":
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    elif kind == "jpeg":
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(30, 71)))
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    elif kind == "crop":
        f = rng.uniform(0.85, 0.93)
        cw, ch = max(1, round(w * f)), max(1, round(h * f))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        im = im.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BILINEAR)
    elif kind == "color":
        a = rgb.astype(np.float64) * rng.uniform(0.85, 1.15, 3) + rng.uniform(-15, 15, 3)
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    elif kind == "blur":
        im = (
            im.resize((w * 4, h * 4), Image.Resampling.BICUBIC)
            .filter(ImageFilter.GaussianBlur(4 * rng.uniform(1.2, 2.0)))
            .resize((w, h), Image.Resampling.BILINEAR)
        )
    elif kind == "dark":
        im = Image.fromarray((rgb.astype(np.float64) * rng.uniform(0.08, 0.15)).astype(np.uint8))
    elif kind == "blank":
        level = int(rng.integers(0, 256))
        a = np.clip(level + rng.normal(0, 1.5, rgb.shape), 0, 255).astype(np.uint8)
        im = Image.fromarray(a)
    return np.asarray(im.convert("RGB"))


def build_set(per_class: int, seed: int) -> dict:
    from firstlight.datasets import ANIMAL_CLASSES, _animal_arrays

    images, labels = _animal_arrays()
    # animal-mnist holds exact duplicates of its own (284 of 10,000): keep the first of each
    seen, keep = set(), []
    for i, a in enumerate(images):
        h = hashlib.sha256(a.tobytes()).hexdigest()
        if h not in seen:
            seen.add(h)
            keep.append(i)
    package_dups = len(images) - len(keep)
    keep = np.asarray(keep)
    rng = np.random.default_rng(seed)
    kept_classes = [c for c in ANIMAL_CLASSES if c != HELD_OUT]
    rows: list[dict] = []
    used: set[int] = set()
    for c in kept_classes:
        idx = keep[labels[keep] == ANIMAL_CLASSES.index(c)]
        for i in rng.choice(idx, per_class, replace=False):
            used.add(int(i))
            rows.append({"rgb": np.stack([images[i]] * 3, -1), "label": c, "true": c, "kind": "original", "source": -1})
    n0 = len(rows)
    perm = rng.permutation(n0)
    for r, p in zip(rows, perm):
        r["split"] = "train" if p < 0.7 * n0 else "validation" if p < 0.85 * n0 else "test"
    # near-duplicates (5 % of the final set ≈ 5.5 % of the originals), distinct sources
    n_near = round(0.05 * n0 / 0.9)
    sources = rng.choice(n0, n_near + n_near // 5, replace=False)
    kinds = ["crop", "flip", "jpeg", "color"]
    for j, s in enumerate(sources[:n_near]):
        src = rows[s]
        other = [x for x in SPLIT_NAMES if x != src["split"]]
        split = src["split"] if j % 2 == 0 else other[int(rng.integers(0, 2))]
        rows.append(
            {"rgb": variant(src["rgb"], kinds[j % 4], rng), "label": src["label"], "true": src["true"], "kind": kinds[j % 4], "source": int(s), "split": split}
        )
    # exact copies across splits
    for s in sources[n_near:]:
        src = rows[s]
        other = [x for x in SPLIT_NAMES if x != src["split"]]
        rows.append(
            {"rgb": src["rgb"].copy(), "label": src["label"], "true": src["true"], "kind": "exact", "source": int(s), "split": other[int(rng.integers(0, 2))]}
        )
    # outliers: 2 % held-out class, labeled as a random kept concept, in train
    n_out = round(0.02 * len(rows))
    idx = keep[labels[keep] == ANIMAL_CLASSES.index(HELD_OUT)]
    for i in rng.choice(idx, n_out, replace=False):
        rows.append(
            {
                "rgb": np.stack([images[i]] * 3, -1),
                "label": kept_classes[int(rng.integers(0, len(kept_classes)))],
                "true": HELD_OUT,
                "kind": "outlier",
                "source": -1,
                "split": "train",
            }
        )
    # bad images, made from package images not otherwise in the set (so not copies of a row)
    unused = np.array([i for i in keep if int(i) not in used and labels[i] != ANIMAL_CLASSES.index(HELD_OUT)])
    for kind, count in (("blur", 30), ("dark", 30), ("blank", 15)):
        picked = rng.choice(unused, count, replace=False)
        unused = np.setdiff1d(unused, picked)
        for i in picked:
            c = ANIMAL_CLASSES[labels[i]]
            rows.append({"rgb": variant(np.stack([images[i]] * 3, -1), kind, rng), "label": c, "true": c, "kind": kind, "source": -1, "split": "train"})
    return {"rows": rows, "package_dups": package_dups, "classes": kept_classes, "originals": n0}


def embed(rows: list[dict], log=print) -> np.ndarray:
    from firstlight.models import backbone
    from firstlight.models.preprocess import to_model_input

    backbone.configure_torch_threads(2)
    model = backbone.load_efficientnet()
    out = np.empty((len(rows), backbone.EMBEDDING_DIM), np.float32)
    t0 = time.monotonic()
    for s in range(0, len(rows), 8):
        chunk = rows[s : s + 8]
        x = np.stack([to_model_input(Image.open(io.BytesIO(png(r["rgb"]))), 224) for r in chunk])
        out[s : s + len(chunk)], _ = backbone.embed_and_classify(model, x)
        if s % 800 == 0:
            log(f"  embedded {s + len(chunk)}/{len(rows)} ({(s + len(chunk)) / (time.monotonic() - t0):.0f} img/s)")
    return out


def pr(found: set, truth: set) -> dict:
    tp = len(found & truth)
    return {"precision": tp / len(found) if found else 1.0, "recall": tp / len(truth) if truth else 1.0, "found": len(found), "truth": len(truth), "tp": tp}


def weaken(rows: list[dict], X: np.ndarray, classes: list[str], seed: int, draw: int = 0) -> tuple[str, str]:
    """Move 30 % of one concept's train labels to its most similar concept (centroid cosine).
    ``draw`` picks another random 30 % (0: the bench's)."""
    orig = [i for i, r in enumerate(rows) if r["kind"] == "original"]
    cent = {c: normalize(X[[i for i in orig if rows[i]["true"] == c]].mean(0, keepdims=True))[0] for c in classes}
    best = max(((a, b) for a in classes for b in classes if a < b), key=lambda p: float(cent[p[0]] @ cent[p[1]]))
    weak, into = best
    rng = np.random.default_rng(seed + 7 + 1000 * draw)
    # all its train labels, copies included (a copy keeping the right label would undo part of the
    # noise); the held-out giraffes labeled with it are not its labels
    members = [i for i, r in enumerate(rows) if r["split"] == "train" and r["label"] == weak and r["kind"] != "outlier"]
    for i in rng.choice(members, round(0.3 * len(members)), replace=False):
        rows[i]["label"] = into
    return weak, into


def _leaked(groups: list, split_of: list[str]) -> int:
    """Held-out rows with a copy in another split, as the health check's leaks check counts them."""
    gids = splits.group_of_rows(len(split_of), [g.members for g in groups])
    by: dict[int, list[int]] = {}
    for i, g in enumerate(gids):
        by.setdefault(g, []).append(i)
    return len(splits.leaked_rows(splits.leaks([m for m in by.values() if len(m) > 1], split_of)))


def resplit(X, labels, copies, check_groups, planted_split, hashes, thumbs, canvases, seed: int) -> dict:  # type: ignore[no-untyped-def]
    """CreateDataset's group_duplicates on the planted set: the groups FindDuplicateGroups finds
    (the health check's detector, with the pixels), merged and split group-aware 70/15/15,
    against the planted splits and a plain stratified re-draw (what CreateDataset does without
    the option). Leaks counted twice: as the health check detects them (its own groups, blank
    images skipped) and on the planted truth (copy/source pairs in two splits)."""
    from firstlight.domain import group_split
    from firstlight.domain import splits as domain_splits

    n = len(labels)
    fractions = (0.7, 0.15, 0.15)
    found = health.duplicate_groups(X, content_hashes=hashes, thumbnails=thumbs, canvases=canvases)
    merged = group_split.merge_groups([None] * n, [g.members for g in found])
    grouped = group_split.group_split(labels, merged, fractions=fractions, seed=seed)
    plain = domain_splits.stratified_split(labels, fractions=fractions, seed=seed)
    out: dict = {"groups": len(found), "requested": grouped.requested, "achieved": grouped.achieved}
    for name, assignment in (("planted", None), ("plain_redraw", plain), ("grouped", grouped.splits)):
        split_of = list(planted_split)
        if assignment is not None:
            split_of = [""] * n
            for s, idx in assignment.items():
                for i in idx:
                    split_of[i] = s
        out[name] = {
            "detected_leaks": _leaked(check_groups, split_of),
            "planted_pairs_across_splits": sum(split_of[a] != split_of[b] for a, b in copies),
            "planted_pairs": len(copies),
        }
    return out


def planted(args: argparse.Namespace, log=print) -> dict:
    data = build_set(args.per_class, args.seed)
    rows = data["rows"]
    n = len(rows)
    CACHE.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(b"".join(r["rgb"].tobytes() for r in rows)).hexdigest()[:16]
    path = CACHE / f"planted_{key}.npy"
    t0 = time.monotonic()
    if path.exists():
        X = np.load(path)
    else:
        log(f"embedding {n} images (224 px, EfficientNet-Lite0)")
        X = embed(rows, log)
        np.save(path, X)
    t_embed = time.monotonic() - t0
    weak, into = weaken(rows, X, data["classes"], args.seed)
    kind = np.array([r["kind"] for r in rows])
    split_of = [r["split"] for r in rows]
    blobs = [png(r["rgb"]) for r in rows]
    t0 = time.monotonic()
    hashes = [dup.content_hash(b) for b in blobs]
    phashes = [dup.perceptual_hash(r["rgb"]) for r in rows]
    thumbs = np.stack([dup.thumbnail(r["rgb"]) for r in rows])
    canvases = np.stack([crops.canvas(r["rgb"]) for r in rows])
    quality = [image_metrics.image_quality(r["rgb"]) for r in rows]
    t_pixels = time.monotonic() - t0
    blank = [i for i, x in enumerate(image_metrics.flag_issues(quality)) if "blank" in x]
    t0 = time.monotonic()
    nb = knn(X, outliers.DEFAULT_K)
    groups = dup.find_duplicates(
        n=n, neighbors=nb, content_hashes=hashes, thumbnails=thumbs, threshold=args.threshold, embeddings=X, skip=blank, canvases=canvases
    )
    t_dup = time.monotonic() - t0
    copies = [(int(r["source"]), i) for i, r in enumerate(rows) if r["source"] >= 0]
    truth_pairs = {(min(a, b), max(a, b)) for a, b in copies}
    found_pairs = dup.pair_set(groups)
    res: dict = {"n": n, "originals": data["originals"], "package_exact_duplicates_removed": data["package_dups"], "weak": weak, "into": into}
    res["near_duplicates_pairs_in_groups"] = pr(found_pairs, truth_pairs)
    Xn = normalize(X)
    bl = set(blank)
    direct = {(a, b) for a, b, _ in dup.embedding_pairs(nb, args.threshold) if a not in bl and b not in bl}
    direct |= {(a, b) for a, b, _ in dup.thumbnail_pairs(nb, thumbs) if a not in bl and b not in bl}
    direct |= {(a, b) for a, b, _ in crops.crop_pairs(nb, canvases) if a not in bl and b not in bl}
    # the perceptual hash (not used by default) for comparison, confirmed by the embedding
    ph = {(a, b) for a, b, _ in dup.hash_pairs(phashes, args.max_hamming) if a not in bl and b not in bl and float(Xn[a] @ Xn[b]) >= dup.HASH_MIN_COSINE}
    res["perceptual_hash_pairs"] = pr(ph, truth_pairs)
    direct |= {(a, b) for g in dup.exact_groups(hashes) for a in g for b in g if a < b}
    res["near_duplicates_pairs_direct"] = pr(direct, truth_pairs)
    # per kind recall
    res["near_duplicates_recall_by_kind"] = {
        k: float(np.mean([(min(a, b), max(a, b)) in found_pairs for a, b in copies if rows[b]["kind"] == k]))
        for k in ("crop", "flip", "jpeg", "color", "exact")
    }
    # group-level: a copy is "caught" when it shares a group with its source
    # leaks
    gids = splits.group_of_rows(n, [g.members for g in groups])
    by: dict[int, list[int]] = {}
    for i, g in enumerate(gids):
        by.setdefault(g, []).append(i)
    found_leaks = splits.leaks([m for m in by.values() if len(m) > 1], split_of)
    leak_rows = splits.leaked_rows(found_leaks)
    truth_leak = {b if split_of[a] == "train" or split_of[b] != "train" else a for a, b in copies if split_of[a] != split_of[b]}
    # a leak is one pair across splits; score on the held-out row of each planted cross-split pair
    truth_leak = set()
    for a, b in copies:
        if split_of[a] != split_of[b]:
            truth_leak.add(b if split_of[b] != "train" else a)
    res["leaks_rows"] = pr(leak_rows, truth_leak)
    t0 = time.monotonic()
    res["resplit"] = resplit(X, [r["label"] for r in rows], copies, groups, split_of, hashes, thumbs, canvases, args.seed)
    res["resplit"]["seconds"] = time.monotonic() - t0
    # outliers
    score = outliers.outlier_scores(neighbors=nb)
    clean = kind != "blank"  # blank images are outliers too, but not the held-out class
    pos = kind == "outlier"
    res["outlier_auroc_heldout"] = outliers.auroc(score[clean], pos[clean])
    res["outlier_auroc_by_k"] = {k: outliers.auroc(outliers.outlier_scores(neighbors=nb, k=k)[clean], pos[clean]) for k in (10, 30, 50)}
    labels_now = [r["label"] for r in rows]
    cscore = outliers.concept_outlier_scores(X, labels_now, k=10)
    res["concept_outlier_auroc_heldout"] = outliers.auroc(np.nan_to_num(cscore[clean]), pos[clean])
    plain = np.flatnonzero(np.isin(kind, ["original", "outlier", "crop", "flip", "jpeg", "color", "exact"]))
    top = plain[np.argsort(-score[plain])[: pos.sum()]]
    res["outlier_precision_at_planted_count_without_bad_images"] = float(pos[top].mean())
    # image quality
    issues = image_metrics.flag_issues(quality)
    for flag, k in (("blurry", "blur"), ("dark", "dark"), ("blank", "blank")):
        found = {i for i, x in enumerate(issues) if flag in x}
        res[f"quality_{flag}"] = pr(found, set(np.flatnonzero(kind == k).tolist()))
    # worst slice: transfer classifier on train, test split
    from firstlight.domain.heads.transfer import TransferSettings, train_transfer

    tr = [i for i in range(n) if split_of[i] == "train"]
    te = [i for i in range(n) if split_of[i] == "test" and kind[i] in ("original",)]
    head = train_transfer(X[tr], [labels_now[i] for i in tr], data["classes"], TransferSettings())
    proba = head.predict_proba(X[te])
    pred = [data["classes"][int(k)] for k in proba.argmax(1)]
    qb = {f"q_{m}": image_metrics.buckets([getattr(quality[i], m) for i in te]) for m in ("brightness", "contrast", "blur")}
    fields = {"cluster": slices.kmeans_clusters(X[te], seed=args.seed), **qb}
    truth = [rows[i]["true"] for i in te]
    report = slices.rank_slices(truth, pred, fields, proba=proba, concepts=data["classes"], rank_by=slices.DEFAULT_RANK_BY, min_size=20, limit=1000)
    worst = report.slices
    res["model_overall_test"] = dict(report.overall)
    res["worst_slices_by"] = report.rank_by
    res["worst_slices"] = [{k: v for k, v in vars(s).items() if k != "figures"} | {k: vars(f) for k, f in s.figures.items()} for s in worst[:5]]
    res["worst_slice_is_weak_concept"] = bool(worst and worst[0].field == "concept" and worst[0].value == weak)
    res["weak_concept_rank"] = {
        fig: next(
            k + 1
            for k, w in enumerate(slices.rank_slices(truth, pred, fields, proba=proba, concepts=data["classes"], rank_by=fig, limit=1000).slices)
            if (w.field, w.value) == ("concept", weak)
        )
        for fig in slices.RANK_BY
    }
    # the planted effect: the weak concept's test accuracy with the clean labels vs the planted ones
    clean_head = train_transfer(X[tr], [rows[i]["true"] if rows[i]["kind"] != "outlier" else labels_now[i] for i in tr], data["classes"], TransferSettings())
    clean_pred = [data["classes"][int(k)] for k in clean_head.predict_proba(X[te]).argmax(1)]
    w_rows = [j for j, i in enumerate(te) if rows[i]["true"] == weak]
    res["weak_concept_test_accuracy"] = {
        "clean_labels": float(np.mean([clean_pred[j] == weak for j in w_rows])),
        "planted": float(np.mean([pred[j] == weak for j in w_rows])),
        "n": len(w_rows),
    }
    for w in res["worst_slices"]:
        if w["field"] == "cluster":
            members = [rows[te[j]]["true"] for j, c in enumerate(fields["cluster"]) if c == w["value"]]
            top = max(set(members), key=members.count)
            w["majority_concept"] = f"{top} ({members.count(top)}/{len(members)})"
    if args.explain:
        from firstlight.curation.quality import explain
        from firstlight.models import backbone
        from firstlight.models.preprocess import to_model_input

        model = backbone.load_efficientnet()
        batch = np.stack([to_model_input(Image.fromarray(rows[i]["rgb"]), 224) for i in te[: args.explain]])
        t0 = time.monotonic()
        # the same fill for the salient and the random mask; the random one averaged over 3 draws
        res["explain_faithfulness"] = {
            f"{name}, {fill} fill, {var}": vars(
                explain.faithfulness(model, head.W, head.b, batch, grid=grid, fill=fill, variant=var, draws=3, smooth_random=smooth)
            )
            for name, grid, smooth in (("scattered pixels", 0, False), ("smooth region", 0, True), ("7x7 cells", 7, False))
            for fill in ("mean", "blur")
            for var in ("gradcam", "gradcam++")
        }
        res.setdefault("timings_s", {})["explain"] = time.monotonic() - t0
    # health check
    rep, _ = health.health_check(labels_now, embeddings=X, split_of=split_of, content_hashes=hashes, thumbnails=thumbs, canvases=canvases, quality=quality)
    res["health"] = {c.name: [c.status, c.count, c.message] for c in rep.checks}
    res.setdefault("timings_s", {}).update({"embed_or_cache": t_embed, "hashes_and_quality": t_pixels, "knn_and_duplicates": t_dup})
    return res, X


def slice_sweep(seeds: list[int], draws: int, per_class: int = 340, log=print) -> dict:  # type: ignore[no-untyped-def]
    """Rank of the weak concept among all slices under each per-slice figure (slices.ALL_FIGURES),
    per seed × draw of which 30 % of its labels move: same sets, slices and heads as ``planted``."""
    from firstlight.domain.heads.transfer import TransferSettings, train_transfer

    out: dict = {"cases": []}
    for seed in seeds:
        data = build_set(per_class, seed)
        rows = data["rows"]
        key = hashlib.sha256(b"".join(r["rgb"].tobytes() for r in rows)).hexdigest()[:16]
        path = CACHE / f"planted_{key}.npy"
        if not path.exists():
            log(f"seed {seed}: embedding {len(rows)} images (cached in {path})")
            CACHE.mkdir(parents=True, exist_ok=True)
            np.save(path, embed(rows, log))
        X = np.load(path)
        split_of = [r["split"] for r in rows]
        tr = [i for i in range(len(rows)) if split_of[i] == "train"]
        te = [i for i in range(len(rows)) if split_of[i] == "test" and rows[i]["kind"] == "original"]
        quality = [image_metrics.image_quality(rows[i]["rgb"]) for i in te]
        fields = {"cluster": slices.kmeans_clusters(X[te], seed=seed)}
        fields |= {f"q_{m}": image_metrics.buckets([getattr(q, m) for q in quality]) for m in ("brightness", "contrast", "blur")}
        truth = [rows[i]["true"] for i in te]
        original = [r["label"] for r in rows]
        for draw in range(draws):
            for r, lab in zip(rows, original):
                r["label"] = lab
            weak, into = weaken(rows, X, data["classes"], seed, draw)
            head = train_transfer(X[tr], [rows[i]["label"] for i in tr], data["classes"], TransferSettings())
            proba = head.predict_proba(X[te])
            pred = [data["classes"][int(k)] for k in proba.argmax(1)]
            # "first": the best-ranked slice that is not the weak concept; "margin": the weak concept's
            # pessimistic gap minus that slice's (> 0: the weak concept is first)
            case: dict = {"seed": seed, "draw": draw, "weak": weak, "into": into, "ranks": {}, "first": {}, "weak_figures": {}}
            for fig in slices.ALL_FIGURES:
                rep = slices.rank_slices(truth, pred, fields, proba=proba, concepts=data["classes"], rank_by=fig, min_size=20, limit=1000)
                order = [(s.field, s.value) for s in rep.slices]
                case["ranks"][fig] = order.index(("concept", weak)) + 1
                w = rep.slices[case["ranks"][fig] - 1]
                # the first slice other than the weak concept: what a ranking puts first instead, or next
                other = next(s for s in rep.slices if s is not w)
                members = [truth[j] for j, v in enumerate(truth if other.field == "concept" else fields[other.field]) if v == other.value]
                major = max(set(members), key=members.count)
                case["first"][fig] = {
                    "slice": f"{other.field}={other.value}",
                    "n": other.n,
                    "value": other.figures[fig].value,
                    "rank_gap": other.rank_gap,
                    "majority": f"{major} {members.count(major)}/{len(members)}",
                }
                case["weak_figures"][fig] = {
                    "value": w.figures[fig].value,
                    "rank_gap": w.rank_gap,
                    "overall": rep.overall[fig],
                    "margin": w.rank_gap - other.rank_gap,
                }
            log(f"seed {seed} draw {draw} weak {weak}->{into}: " + ", ".join(f"{k} {v}" for k, v in case["ranks"].items()))
            out["cases"].append(case)
    out["weak_first"] = {fig: sum(c["ranks"][fig] == 1 for c in out["cases"]) for fig in slices.ALL_FIGURES}
    out["weak_in_top3"] = {fig: sum(c["ranks"][fig] <= 3 for c in out["cases"]) for fig in slices.ALL_FIGURES}
    return out


def scale(X: np.ndarray, n: int, seed: int, log=print) -> dict:
    """Duplicate + outlier passes over ``n`` embeddings derived from the real ones, with 500
    planted copies (re-normalised x + N(0, 0.002²) per dimension: cosine ≈ 0.997)."""
    from bench.common import jittered

    labels = ["x"] * len(X)
    Y, _, _ = jittered(normalize(X), labels, n - 500, seed)
    rng = np.random.default_rng(seed)
    src = rng.choice(len(Y), 500, replace=False)
    copies = normalize(Y[src] + rng.normal(0, 0.002, (500, Y.shape[1])).astype(np.float32))
    Z = np.concatenate([Y, copies])
    t0 = time.monotonic()
    nb = knn(Z, outliers.DEFAULT_K)
    t_knn = time.monotonic() - t0
    groups = dup.find_duplicates(n=len(Z), neighbors=nb, threshold=0.95)
    score = outliers.outlier_scores(neighbors=nb)
    t_all = time.monotonic() - t0
    found = dup.pair_set(groups)
    caught = float(np.mean([(int(s), len(Y) + j) in found for j, s in enumerate(src)]))
    # neighbour recall of the approximate pass against exact, on 500 random rows
    q = rng.choice(len(Z), 500, replace=False)
    Zt = normalize(Z)
    sims = Zt[q] @ Zt.T
    sims[np.arange(len(q)), q] = -np.inf
    exact = np.argsort(-sims, axis=1)[:, :10]
    recall = float(np.mean([len(set(nb.index[i, :10]) & set(exact[j])) / 10 for j, i in enumerate(q)]))
    return {
        "n": len(Z),
        "seconds_knn": t_knn,
        "seconds_total": t_all,
        "planted_copy_recall": caught,
        "knn_recall_at_10": recall,
        "groups": len(groups),
        "outlier_score_mean": float(score.mean()),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
    }


def run(quick: bool = False, log=print) -> dict:  # type: ignore[no-untyped-def]
    """The `python -m bench` section (no stack): the planted set (seed 0) and the scale check
    (100,000 embeddings; 25,000 with ``quick``), with the exact full-dimension blocked product on
    a 20,000-row subset as the same-run baseline."""
    import torch

    from bench.common import Row

    torch.set_num_threads(2)
    args = argparse.Namespace(per_class=340, seed=0, threshold=dup.DEFAULT_THRESHOLD, max_hamming=dup.DEFAULT_MAX_HAMMING, explain=0)
    res, X = planted(args, log)
    n = 25_000 if quick else 100_000
    res["scale"] = sc = scale(X, n, 0, log)
    from bench.common import jittered

    Y, _, _ = jittered(normalize(X), ["x"] * len(X), 20_000, 1)
    t0 = time.monotonic()
    knn(Y, outliers.DEFAULT_K, exact_below=10**9)
    exact_20k = time.monotonic() - t0
    nd, lk, rs = res["near_duplicates_pairs_in_groups"], res["leaks_rows"], res["resplit"]
    g, p = rs["grouped"], rs["plain_redraw"]
    rows = [
        Row(
            f"data quality: duplicate + outlier passes, {sc['n']:,} × 1280",
            f"{sc['seconds_total']:.0f} s (recall@10 {sc['knn_recall_at_10']:.3f}, planted copies {sc['planted_copy_recall']:.2f})",
            f"exact blocked product, 20,000 rows: {exact_20k:.0f} s (all pairs grow ×{(sc['n'] / 20_000) ** 2:.0f} to {sc['n']:,})",
            f"{sc['seconds_total'] / exact_20k:.2f}×",
            "≤ 5 min on 2 cores",
            sc["seconds_total"] <= 300,
        ),
        Row(
            "data quality: near-duplicates on planted animal-mnist",
            f"precision {nd['precision']:.3f}, recall {nd['recall']:.3f}",
            "planted truth (204 pairs)",
            "",
            "≥ 0.9 / ≥ 0.8",
            nd["precision"] >= 0.9 and nd["recall"] >= 0.8,
        ),
        Row(
            "data quality: leaks across splits",
            f"precision {lk['precision']:.3f}, recall {lk['recall']:.3f}",
            "planted truth (119 rows)",
            "",
            "≥ 0.9 / ≥ 0.8",
            lk["precision"] >= 0.9 and lk["recall"] >= 0.8,
        ),
        Row(
            "data quality: leaks after re-splitting by duplicate group",
            f"{g['detected_leaks']} detected; planted pairs across splits {g['planted_pairs_across_splits']}/{g['planted_pairs']}",
            f"plain re-draw: {p['detected_leaks']} detected, {p['planted_pairs_across_splits']}/{p['planted_pairs']} planted pairs across splits",
            "",
            "0 detected",
            g["detected_leaks"] == 0,
        ),
        Row(
            "data quality: held-out-class outliers", f"AUROC {res['outlier_auroc_heldout']:.3f}", "65 planted", "", "≥ 0.8", res["outlier_auroc_heldout"] >= 0.8
        ),
        Row(
            f"data quality: worst slice by {res['worst_slices_by']} (weak concept {res['weak']})",
            f"rank {res['weak_concept_rank'][res['worst_slices_by']]}",
            ", ".join(f"by {k}: rank {v}" for k, v in res["weak_concept_rank"].items() if k != res["worst_slices_by"]),
            "",
            "rank 1",
            res["worst_slice_is_weak_concept"],
        ),
    ]
    res["rows"] = [r.as_dict() for r in rows]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=340)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=dup.DEFAULT_THRESHOLD)
    ap.add_argument("--max-hamming", type=int, default=dup.DEFAULT_MAX_HAMMING)
    ap.add_argument("--scale", type=int, default=0, help="also run the scale check on this many embeddings (e.g. 100000)")
    ap.add_argument("--explain", type=int, default=0, help="Grad-CAM faithfulness on this many test images")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--slice-sweep", type=int, nargs="*", default=None, metavar="SEED", help="only the worst-slice sweep over these seeds (e.g. 0 1 2)")
    ap.add_argument("--draws", type=int, default=5, help="with --slice-sweep: draws of the weak concept's moved labels per seed")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    if args.slice_sweep is not None:
        res = slice_sweep(args.slice_sweep or [0, 1, 2], args.draws, args.per_class)
        print(json.dumps(res, indent=1, default=float))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(res, indent=1, default=float))
        return
    res, X = planted(args)
    if args.scale:
        res["scale"] = scale(X, args.scale, args.seed)
    print(json.dumps(res, indent=1, default=float))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
