"""1:N search at the identity level: face hits from a vector index, grouped
into identities (an identity scores its best face), with an optional metadata
filter applied inside the index."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from facebank.index.records import ENROLLED, IdentityRecord

if TYPE_CHECKING:
    from facebank.index.store import FaceStore


class Hit(NamedTuple):
    identity: IdentityRecord
    score: float
    face_ids: list[int]


def search_identities(store: "FaceStore", cid: int, queries: np.ndarray, top_k: int, metadata_filter: dict[str, str] | None,
                      min_score: float) -> list[list[Hit]]:
    segment = store.segments.get(cid, ENROLLED)
    allowed = _filter_faces(store, cid, metadata_filter) if metadata_filter else None
    if allowed is not None and len(allowed) == 0:
        return [[] for _ in queries]
    k = max(40, 4 * top_k)  # room for an identity's several faces; grown below if not enough
    results: list[list[Hit]] = [[] for _ in queries]
    todo = np.arange(len(queries))
    while len(todo):
        scores, labels = segment.search(queries[todo], k, allowed)
        hits, short = _group(store, scores, labels, top_k, min_score)
        for row, found in zip(todo.tolist(), hits):
            results[row] = found
        # An identity with many faces can crowd the others out of the k nearest:
        # look further for those queries only.
        if k >= 1024 or k >= len(segment.index):
            break
        todo, k = todo[short], k * 4
    return results


def _group(store: "FaceStore", scores: np.ndarray, labels: np.ndarray, top_k: int, min_score: float = -1.0) -> tuple[list[list[Hit]], np.ndarray]:
    """Face hits to identity hits (see `group_faces`), with their records. Also
    says which rows came up short (fewer than top_k identities although every
    hit slot was filled)."""
    g = group_faces(scores, labels, store.owners.lookup(labels), top_k, min_score)
    results: list[list[Hit]] = [[] for _ in range(len(labels))]
    faces = g.faces.tolist()
    get = store.identities.get
    with store.catalog.lazy_read() as t:
        for row, iid, score, start, end in zip(g.row.tolist(), g.iid.tolist(), g.score.tolist(), g.start.tolist(), g.end.tolist()):
            rec = get(iid, t)
            if rec is not None:  # None: forgotten since the vector search
                results[row].append(Hit(rec, score, faces[start:end]))
    found = np.fromiter((len(r) for r in results), np.int64, len(results))
    short = (found < top_k) & g.full & ~g.low
    return results, short


class GroupedHits(NamedTuple):
    """Identity hits of a batch, by query row and best first within a row:
    identity `iid[i]` answers query `row[i]` with `score[i]` (its best face) and
    its faces among the hits are `faces[start[i]:end[i]]`, best first."""

    row: np.ndarray
    iid: np.ndarray
    score: np.ndarray
    start: np.ndarray
    end: np.ndarray
    faces: np.ndarray
    full: np.ndarray  # per query: every hit slot held a face
    low: np.ndarray   # per query: some hit was cut by min_score


def group_faces(scores: np.ndarray, labels: np.ndarray, owners: np.ndarray, top_k: int, min_score: float) -> GroupedHits:
    """An identity scores its best face; the best top_k identities per query are
    kept. Face hits come best first in each row (as every index returns them);
    label -1 is an empty slot, owner <= 0 a face no identity owns. Whole-batch
    array work: a Python loop over every face hit cost more than the search."""
    nq = len(labels)
    taken = labels >= 0
    valid = taken & (owners > 0) & (scores >= min_score)
    rows, cols = np.nonzero(valid)
    own = owners[rows, cols]
    order = np.lexsort((cols, own, rows))  # by query, then identity, then rank
    rows, own, cols = rows[order], own[order], cols[order]
    first = np.ones(len(rows), bool)
    first[1:] = (rows[1:] != rows[:-1]) | (own[1:] != own[:-1])
    starts = np.flatnonzero(first)  # one per (query, identity); its first face is its best
    ends = np.append(starts[1:], len(rows)).astype(np.int64)
    g_row, g_col = rows[starts], cols[starts]
    ranked = np.lexsort((g_col, g_row))  # identities of each query, best first
    ranked_rows = g_row[ranked]
    rank = np.arange(len(ranked)) - np.searchsorted(ranked_rows, ranked_rows, side="left")
    keep = ranked[rank < top_k]
    return GroupedHits(
        row=g_row[keep], iid=own[starts[keep]], score=scores[g_row[keep], g_col[keep]], start=starts[keep], end=ends[keep],
        faces=labels[rows, cols],
        full=taken[:, -1] if labels.shape[1] else np.zeros(nq, bool),
        low=(taken & (scores < min_score)).any(axis=1),
    )


def _filter_faces(store: "FaceStore", cid: int, metadata_filter: dict[str, str]) -> np.ndarray:
    with store.catalog.read() as t:
        iids: set[int] | None = None
        for key, value in metadata_filter.items():
            found = t.iids_with_metadata(cid, key, value)
            iids = found if iids is None else iids & found
        face_ids = [fid for iid in sorted(iids or ()) for fid in t.identity_face_ids(iid)]
    return np.asarray(face_ids, np.int64)
