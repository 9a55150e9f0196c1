"""Choosing an IVF index's nprobe: by calibration on the collection itself, and,
for a retrain that replaces an index, so that nobody is searched worse than before."""

from __future__ import annotations

from typing import Callable, Protocol

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


class NearestOthers:
    """Each query face's exact top-11 by inner product among the vectors fed to it,
    chunk by chunk (merged as a sharded search merges): the calibration's ground truth,
    streamed over the collection while a build adds it, never all of it at once."""

    K = 11  # itself and ten others

    def __init__(self, query_ids: np.ndarray, queries: np.ndarray) -> None:
        self.query_ids = np.asarray(query_ids, np.int64)
        self.queries = _f32(queries)
        self.scores = np.full((len(self.query_ids), self.K), -np.inf, np.float32)
        self.ids = np.full((len(self.query_ids), self.K), -1, np.int64)

    def feed(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids) or not len(self.query_ids):
            return
        sims, rows = faiss.knn(self.queries, _f32(vectors), min(self.K, len(ids)), metric=faiss.METRIC_INNER_PRODUCT)
        found = np.where(rows >= 0, np.asarray(ids, np.int64)[np.maximum(rows, 0)], -1)
        sims = np.where(rows >= 0, sims, -np.inf)
        scores = np.concatenate([self.scores, sims], axis=1)
        labels = np.concatenate([self.ids, found], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :self.K]
        self.scores = np.take_along_axis(scores, order, axis=1)
        self.ids = np.take_along_axis(labels, order, axis=1)

    def relevant(self) -> list[set[int]]:
        """For each query: its top-10 others scoring at least RELEVANT_SCORE (the faces that matter to it)."""
        out = []
        for me, found, sims in zip(self.query_ids.tolist(), self.ids, self.scores):
            keep = [i for i in found[(found >= 0) & (sims >= RELEVANT_SCORE)].tolist() if i != me]
            out.append(set(keep[:10]))
        return out


class Calibration:
    """The faces a new IVF is calibrated on: `feed` them every face of the collection once
    (as its lists are filled), then `finish` sets its nprobe (calibrate_nprobe, and for a
    retrain replacing `like`, keep_coverage)."""

    def __init__(self, query_ids: np.ndarray, queries: np.ndarray, calibrating: int) -> None:
        self.truth = NearestOthers(query_ids, queries)
        self.calibrating = calibrating  # the first queries calibrate; the rest compare with `like`

    def feed(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.truth.feed(ids, vectors)

    def finish(self, fresh, like, vectors_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], target: float) -> None:
        relevant, queries, c = self.truth.relevant(), self.truth.queries, self.calibrating
        fresh.default_nprobe, fresh.calibrated_recall = calibrate_nprobe(fresh, queries[:c], relevant[:c], target)
        if like is not None:
            fresh.default_nprobe = keep_coverage(fresh, like, queries[c:], relevant[c:], vectors_of)


def relevant_in_sample(queries: np.ndarray, blocks) -> np.ndarray:
    """Rows of the sample (which holds none of the queries; `blocks`: its (first row,
    float32 rows) a block at a time, ivf_training.decoded_blocks) that are among a query's
    top-10 there scoring at least RELEVANT_SCORE. Those kept out of k-means include every
    face that matters to a query (its global top-10 others, see NearestOthers) that is in
    the sample: a face in the global top-10 is in the top-10 of any subset holding it."""
    if not len(queries):
        return np.zeros(0, np.int64)
    heap = faiss.ResultHeap(len(queries), 10, keep_max=True)
    q = _f32(queries)
    for start, block in blocks:
        if len(block):
            sims, rows = faiss.knn(q, _f32(block), min(10, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
            pad = 10 - rows.shape[1]
            heap.add_result(np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf),
                            np.pad(np.where(rows >= 0, rows + start, -1), ((0, 0), (0, pad)), constant_values=-1))
    heap.finalize()
    sims, rows = heap.D, heap.I
    return np.unique(rows[(rows >= 0) & (sims >= RELEVANT_SCORE)])


def calibrate_nprobe(index: TrainedIvf, queries: np.ndarray, relevant: list[set[int]], target: float) -> tuple[int, float]:
    """The smallest nprobe (doubling from nlist/64, then bisection) that finds `target` of the faces
    that matter, measured on the collection itself.

    Queries stand in for new photos: faces of the collection itself, each looking
    for the others (leave one out). The faces that matter for each query
    (`relevant`, NearestOthers) are its exact top-10 others scoring at least
    RELEVANT_SCORE (a match or a near miss; far impostors are noise for
    identification). IvfIndex.train keeps the queries out of k-means with the
    faces that matter to them, so they measure people the centroids never saw,
    as most people enrolled after a training are. Measured on trained people
    only, the lists learn the people themselves (at 39 faces per list, four
    people each) and nprobe 1 looks enough: it found 16% of later people's faces
    in a test (tests/test_vectors.py). How many lists must be visited depends on
    how the data clusters, so it is measured, not assumed."""
    q = _f32(queries)

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
    visited = np.zeros((len(queries), quantizer.ntotal), bool)  # a bit a list a query (8 MB for 2,048 x 4,096), not
    visited[np.arange(len(queries))[:, None], probed] = True  # nprobe lists a target (126 MB at 2M faces)
    return visited[owner, lists[:, 0]]


def measurably_worse(new: np.ndarray, old: np.ndarray) -> bool:
    """Do the same targets find fewer hits with `new` than with `old`, by more than
    twice the standard error of the paired difference?"""
    if len(new) == 0:
        return False
    d = new.astype(np.float64) - old
    return bool(d.mean() < -2 * d.std() / np.sqrt(len(d)))


def keep_coverage(fresh: TrainedIvf, like: TrainedIvf, queries: np.ndarray, relevant: list[set[int]],
                  vectors_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> int:
    """The nprobe for `fresh`, a retrain replacing `like` on (almost) the same faces:
    at least its calibration and like's nprobe, raised in steps of 1/8 while the
    collection's own faces (`queries`, with the faces that matter to each, from
    NearestOthers; `vectors_of(ids)` fetches those that are still present) find
    their nearest others measurably less often than with like's centroids and
    nprobe. Both are measured on the same faces, from the centroids: a
    calibration on other queries differs from the last one by a few tenths of a
    point from sampling alone, and raising nprobe on such noise would slow every
    search (checked on 10,000 held-out queries at 100k faces: fresh centroids at
    the old nprobe were within that noise)."""
    nprobe = min(fresh.nlist, max(fresh.default_nprobe, like.default_nprobe))
    wanted = np.fromiter((i for want in relevant for i in want), np.int64)
    owner = np.asarray([q for q, want in enumerate(relevant) for _ in want], np.int64)
    found, targets = vectors_of(wanted)
    at = np.searchsorted(found, wanted)
    present = (at < len(found)) & (found[np.minimum(at, max(len(found) - 1, 0))] == wanted) if len(found) else np.zeros(len(wanted), bool)
    owner, targets = owner[present], targets[at[present]]
    q = _f32(queries)
    before = list_coverage(like.index.quantizer, q, targets, owner, like.default_nprobe)
    while nprobe < fresh.nlist and measurably_worse(list_coverage(fresh.index.quantizer, q, targets, owner, nprobe), before):
        nprobe = min(fresh.nlist, nprobe + max(1, nprobe // 8))
    return nprobe
