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
    """Face hits to identity hits: an identity scores its best face; its faces
    among the hits are kept, best first. Also says which rows came up short
    (fewer than top_k identities although every hit slot was filled)."""
    owners = store.owners.lookup(labels)
    results, short = [], np.zeros(len(labels), bool)
    with store.catalog.lazy_read() as t:
        for row in range(len(labels)):
            best: dict[int, list] = {}
            low = False
            for face_id, iid, score in zip(labels[row].tolist(), owners[row].tolist(), scores[row].tolist()):
                if score < min_score:
                    low = True  # hits come best first: the rest are lower still
                    break
                if face_id < 0 or iid <= 0:
                    continue
                entry = best.get(iid)
                if entry is None:
                    if len(best) == top_k:
                        continue  # hits come best first: this identity cannot make the top_k
                    best[iid] = entry = [score, []]
                entry[1].append(face_id)
            hits = []
            for iid, (score, faces) in best.items():
                rec = store.identities.get(iid, t)
                if rec is not None:
                    hits.append(Hit(rec, score, faces))
            full = labels.shape[1] > 0 and labels[row, -1] >= 0
            short[row] = len(hits) < top_k and full and not low
            results.append(hits)
    return results, short


def _filter_faces(store: "FaceStore", cid: int, metadata_filter: dict[str, str]) -> np.ndarray:
    with store.catalog.read() as t:
        iids: set[int] | None = None
        for key, value in metadata_filter.items():
            found = t.iids_with_metadata(cid, key, value)
            iids = found if iids is None else iids & found
        face_ids = [fid for iid in sorted(iids or ()) for fid in t.identity_face_ids(iid)]
    return np.asarray(face_ids, np.int64)
