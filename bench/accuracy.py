"""Accuracy on real labelled photos: closed-set rank-1, genuine and impostor
scores, TAR at fixed FARs with the thresholds that give them, the default
threshold's FAR/TAR, and how an identity with several photos is best scored.

Protocol, on the photos the project ships (tests/data/faces: 12 people; the
full-resolution copies in ../shared/faces when present): for each person with
at least two single-person photos, each photo in turn is the probe and that
person's other photos the gallery (leave one out); everyone else enrolled is a
non-mate. Every probe gives one genuine score (its own identity) and one
impostor score per other identity, and the top-1 impostor score is what an
open-set search would have to reject. With 12 people there are a few hundred
impostor scores: FAR below 1/(their count) cannot be resolved and is reported
as such. Group labels: a `group` column in labels.csv (absent here) gives FNMR
and FMR per group at the default threshold; `--labels FILE` runs the same on
your own labelled set (columns path, identity[, group]).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FARS = (0.01, 0.001)


def photos(labels: Path) -> list[dict]:
    with open(labels, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("identity") and r.get("faces", "1") == "1" and "edge_cases" not in r["path"]]


def embed(rows: list[dict], root: Path) -> tuple[np.ndarray, list[str], list[str]]:
    from facebank.embedder import OnnxFaceEmbedder, decode_image, default_model_spec

    embedder = OnnxFaceEmbedder(default_model_spec(), device="cpu")
    vectors, who, groups = [], [], []
    for row in rows:
        faces = embedder.analyze([decode_image((root / row["path"]).read_bytes())])[0]
        if faces:
            vectors.append(faces[0].embedding)
            who.append(row["identity"])
            groups.append(row.get("group", ""))
    return np.asarray(vectors, np.float32), who, groups


def scores(x: np.ndarray, who: list[str], rule: str) -> tuple[list[float], list[float], list[float], int, int]:
    """(genuine scores, all impostor scores, top-1 impostor per probe, rank-1 hits, probes)."""
    people = defaultdict(list)
    for i, w in enumerate(who):
        people[w].append(i)
    genuine, impostor, top_impostor, hits, probes = [], [], [], 0, 0
    for i, w in enumerate(who):
        if len(people[w]) < 2:
            continue
        probes += 1
        per_identity = {}
        for other, members in people.items():
            gallery = [j for j in members if j != i]
            sims = x[gallery] @ x[i]
            centroid = x[gallery].mean(axis=0)
            centroid /= np.linalg.norm(centroid)
            mean_score = float(centroid @ x[i])
            per_identity[other] = {"best-face": float(sims.max()), "mean-template": mean_score,
                                   "max of both": max(float(sims.max()), mean_score)}[rule]
        genuine.append(per_identity[w])
        others = [s for o, s in per_identity.items() if o != w]
        impostor += others
        top_impostor.append(max(others))
        hits += per_identity[w] > max(others)
    return genuine, impostor, top_impostor, hits, probes


def operating_points(genuine: list[float], top_impostor: list[float], default: float) -> dict:
    g, imp = np.asarray(genuine), np.sort(np.asarray(top_impostor))[::-1]
    out = {"impostor_top1_scores": len(imp), "highest_impostor": round(float(imp[0]), 4), "lowest_genuine": round(float(g.min()), 4)}
    for far in FARS:
        allowed = int(np.floor(far * len(imp)))  # impostors that may pass
        if far * len(imp) < 1:
            out[f"far_{far}"] = f"not resolved: {len(imp)} impostor scores resolve FAR down to {1 / len(imp):.4f}"
            continue
        threshold = float(imp[allowed]) + 1e-6
        out[f"far_{far}"] = {"threshold": round(threshold, 4), "tar": round(float(np.mean(g >= threshold)), 4)}
    out["default_threshold"] = {"threshold": default, "far": round(float(np.mean(imp >= default)), 4), "tar": round(float(np.mean(g >= default)), 4)}
    return out


def run(quick: bool, log=print, labels: Path | None = None) -> dict:
    from facebank.server.config import DEFAULT_THRESHOLD

    shared = ROOT.parent / "shared" / "faces"
    root = labels.parent if labels else (shared if (shared / "labels.csv").exists() else ROOT / "tests" / "data" / "faces")
    rows = photos(labels or root / "labels.csv")
    x, who, groups = embed(rows, root)
    results = {"photos_root": str(root), "photos": len(who), "identities": len(set(who)), "rules": {}}
    for rule in ("best-face", "mean-template", "max of both"):
        genuine, impostor, top_impostor, hits, probes = scores(x, who, rule)
        results["rules"][rule] = {"probes": probes, "rank1": round(hits / probes, 4),
                                  **operating_points(genuine, top_impostor, DEFAULT_THRESHOLD),
                                  "_genuine": genuine, "_impostor": impostor}
        log(f"accuracy: {rule}: rank-1 {hits}/{probes}; at {DEFAULT_THRESHOLD}: {results['rules'][rule]['default_threshold']}")
    results["groups"] = per_group(x, who, groups, DEFAULT_THRESHOLD) if any(groups) else \
        "no group labels in these photos' labels.csv; add a `group` column (or pass --labels FILE) for FNMR/FMR per group"
    return {"accuracy": results}


def per_group(x: np.ndarray, who: list[str], groups: list[str], threshold: float) -> dict:
    out = {}
    for group in sorted(set(groups) - {""}):
        idx = [i for i, g in enumerate(groups) if g == group]
        genuine = [float(x[i] @ x[j]) for i in idx for j in idx if i < j and who[i] == who[j]]
        impostor = [float(x[i] @ x[j]) for i in idx for j in range(len(who)) if who[i] != who[j]]
        out[group] = {"fnmr": round(float(np.mean(np.asarray(genuine) < threshold)), 4) if genuine else None,
                      "fmr": round(float(np.mean(np.asarray(impostor) >= threshold)), 4) if impostor else None,
                      "genuine_pairs": len(genuine), "impostor_pairs": len(impostor)}
    return out


def plot(run_dir: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rule = results["rules"]["best-face"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(rule["_impostor"], bins=60, alpha=0.6, label=f"impostor ({len(rule['_impostor'])})", density=True)
    ax.hist(rule["_genuine"], bins=30, alpha=0.6, label=f"genuine ({len(rule['_genuine'])})", density=True)
    ax.axvline(rule["default_threshold"]["threshold"], color="k", linestyle="--", label="default threshold")
    ax.set_xlabel("cosine similarity (best face)")
    ax.legend(fontsize=8)
    ax.set_title("Scores on the shipped photos")
    fig.tight_layout()
    fig.savefig(run_dir / "accuracy_scores.png", dpi=120)
    plt.close(fig)
