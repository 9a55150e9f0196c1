"""Choosing an IVF index's nprobe: by calibration on the collection itself, and,
for a retrain that replaces an index, so that nobody is searched worse than before."""

from __future__ import annotations

from typing import Protocol

import faiss
import numpy as np


class TrainedIvf(Protocol):
    """What calibration needs of an IVF index (vectors.IvfIndex)."""

    index: faiss.IndexIVF
    nlist: int
    default_nprobe: int

TARGET_RECALL = 0.95      # IVF: nprobe is chosen to find this share of the faces that matter
RELEVANT_SCORE = 0.3      # ...which are those scoring at least this (a match, or a near miss)


def _f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _relevant(ids: np.ndarray, vectors: np.ndarray, picks: np.ndarray) -> list[set[int]]:
    """For each picked face: its exact top-10 others scoring at least RELEVANT_SCORE."""
    sims, rows = faiss.knn(_f32(vectors[picks]), _f32(vectors), 11, metric=faiss.METRIC_INNER_PRODUCT)
    relevant = []
    for me, r, s in zip(ids[picks].tolist(), rows, sims):
        found = ids[r[(r >= 0) & (s >= RELEVANT_SCORE)]].tolist()
        relevant.append(set([i for i in found if i != me][:10]))
    return relevant


def calibration_queries(ids: np.ndarray, vectors: np.ndarray, rng: np.random.Generator, queries: int = 256) -> tuple[np.ndarray, list[set[int]]]:
    """Rows of the faces that will query the calibration, and for each the ids of the
    faces that matter to it (its exact top-10 others scoring at least RELEVANT_SCORE)."""
    picks = rng.choice(len(ids), size=min(queries, len(ids)), replace=False)
    return picks, _relevant(np.asarray(ids), vectors, picks)


def held_out_rows(ids: np.ndarray, picks: np.ndarray, relevant: list[set[int]]) -> np.ndarray:
    """The calibration's queries and the faces that matter to them: kept out of k-means,
    so that they stand for people the centroids never saw."""
    wanted = set().union(*relevant) if relevant else set()
    return np.union1d(picks, np.flatnonzero(np.isin(np.asarray(ids), np.fromiter(wanted, np.int64, len(wanted)))))


def calibrate_nprobe(index: TrainedIvf, ids: np.ndarray, vectors: np.ndarray, target: float, rng: np.random.Generator,
                     queries: int = 256, held_out: tuple[np.ndarray, list[set[int]]] | None = None) -> tuple[int, float]:
    """The smallest nprobe (doubling from nlist/64, then bisection) that finds `target` of the faces
    that matter, measured on the collection itself.

    Queries stand in for new photos: faces of the collection itself, each looking
    for the others (leave one out). The faces that matter for each query are its
    exact top-10 others scoring at least RELEVANT_SCORE (a match or a near miss;
    far impostors are noise for identification). `held_out` (calibration_queries,
    from IvfIndex.train): queries that were kept out of k-means with the faces
    that matter to them, so they measure people the centroids never saw, as most
    people enrolled after a training are. Measured on trained people only, the
    lists learn the people themselves (at 39 faces per list, four people each)
    and nprobe 1 looks enough: it found 16% of later people's faces in a test
    (tests/test_vectors.py). How many lists must be visited depends on how the
    data clusters, so it is measured, not assumed."""
    ids = np.asarray(ids)
    picks, relevant = held_out if held_out is not None else calibration_queries(ids, vectors, rng, queries)
    q = _f32(vectors[picks])

    def recall_at(nprobe: int) -> float:
        _, found = index.index.search(q, 11, params=faiss.SearchParametersIVF(nprobe=nprobe))
        return float(np.mean([len(want & set(got.tolist())) / len(want) for want, got in zip(relevant, found) if want] or [1.0]))

    nlist = index.nlist
    nprobe = max(1, nlist // 64)
    recall = recall_at(nprobe)
    while recall < target and nprobe < nlist:  # doubling finds a bracket...
        nprobe = min(nlist, nprobe * 2)
        recall = recall_at(nprobe)
    if recall < target:
        return nprobe, recall
    low = nprobe // 2 if nprobe > max(1, nlist // 64) else 0  # ...known to fall short
    while nprobe - low > max(1, nprobe // 8):  # ...then bisection to within 1/8: doubling alone overshoots up to 2x
        mid = (low + nprobe) // 2
        mid_recall = recall_at(mid)
        if mid_recall >= target:
            nprobe, recall = mid, mid_recall
        else:
            low = mid
    return nprobe, recall


def list_coverage(quantizer: faiss.Index, queries: np.ndarray, targets: np.ndarray, owner: np.ndarray, nprobe: int) -> np.ndarray:
    """For each target vector: is its list among the `nprobe` lists nearest to its
    query (`owner[i]` is target i's query row)? When the targets are each query's
    exact nearest neighbours, the mean is the IVF search's recall of them,
    computed from the centroids alone (a vector is searched iff its list is visited)."""
    if len(targets) == 0:
        return np.ones(0, bool)
    _, probed = quantizer.search(_f32(queries), nprobe)
    _, lists = quantizer.search(_f32(targets), 1)
    return (probed[owner] == lists).any(axis=1)


def measurably_worse(new: np.ndarray, old: np.ndarray) -> bool:
    """Do the same targets find fewer hits with `new` than with `old`, by more than
    twice the standard error of the paired difference?"""
    if len(new) == 0:
        return False
    d = new.astype(np.float64) - old
    return bool(d.mean() < -2 * d.std() / np.sqrt(len(d)))


def keep_coverage(fresh: TrainedIvf, like: TrainedIvf, ids: np.ndarray, vectors: np.ndarray, rng: np.random.Generator,
                  queries: int = 2048) -> int:
    """The nprobe for `fresh`, a retrain replacing `like` on (almost) the same faces:
    at least its calibration and like's nprobe, raised in steps of 1/8 while the
    collection's own faces find their nearest others measurably less often than
    with like's centroids and nprobe. Both are measured on the same faces, from
    the centroids: a calibration on other queries differs from the last one by
    a few tenths of a point from sampling alone, and raising nprobe on such
    noise would slow every search (checked on 10,000 held-out queries at 100k
    faces: fresh centroids at the old nprobe were within that noise)."""
    ids = np.asarray(ids)
    nprobe = min(fresh.nlist, max(fresh.default_nprobe, like.default_nprobe))
    picks = rng.choice(len(ids), size=min(queries, len(ids)), replace=False)
    relevant = _relevant(ids, vectors, picks)
    row_of = {int(i): r for r, i in enumerate(ids.tolist())}
    owner = np.asarray([q for q, want in enumerate(relevant) for _ in want], np.int64)
    targets = vectors[np.asarray([row_of[i] for want in relevant for i in want], np.int64)]
    q = vectors[picks]
    before = list_coverage(like.index.quantizer, q, targets, owner, like.default_nprobe)
    while nprobe < fresh.nlist and measurably_worse(list_coverage(fresh.index.quantizer, q, targets, owner, nprobe), before):
        nprobe = min(fresh.nlist, nprobe + max(1, nprobe // 8))
    return nprobe
