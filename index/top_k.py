"""Top-k over vectors the caller holds, and the small conversions every index uses:
exact search (the reference every fast path is tested against, and the search of a
subset too small for an index), merging two top-k lists, FAISS id selectors."""

from __future__ import annotations

import faiss
import numpy as np


def merge_top_k(s1, l1, s2, l2, k):
    scores = np.concatenate([s1, s2], axis=1)
    labels = np.concatenate([l1, l2], axis=1)
    scores = np.where(labels < 0, -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1).astype(np.float32), np.take_along_axis(labels, order, axis=1)


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product; pads with id -1 when fewer than k."""
    nq = len(queries)
    scores = np.full((nq, k), -np.inf, np.float32)
    labels = np.full((nq, k), -1, np.int64)
    if len(ids) == 0 or k == 0:
        return scores, labels
    sims = queries @ vectors.T
    take = min(k, len(ids))
    part = np.argpartition(-sims, take - 1, axis=1)[:, :take]
    order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
    best = np.take_along_axis(part, order, axis=1)
    scores[:, :take] = np.take_along_axis(sims, best, axis=1)
    labels[:, :take] = ids[best]
    return scores, labels


def selector_for(allowed: np.ndarray | None):
    """A FAISS selector for these ids: a hash set while few, else a bitmap over the id
    range (built in one numpy pass; a set of 100k ids costs more than the search)."""
    if allowed is None:
        return None
    ids = as_i64(allowed)
    if len(ids) <= 4096:
        return faiss.IDSelectorBatch(ids)
    bits = np.zeros(int(ids.max()) + 1, bool)
    bits[ids] = True
    packed = np.packbits(bits, bitorder="little")
    sel = faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed))
    sel.referenced = packed  # the selector reads this memory: keep it alive with it
    return sel


def as_f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def as_i64(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.int64)
