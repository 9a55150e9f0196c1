"""HNSW over FAISS's IndexHNSWFlat. FAISS cannot remove from a graph, so removal
zeroes the stored vector, hides the id from every search (a tombstone) and asks
for a rebuild in the background."""

from __future__ import annotations

import faiss
import numpy as np

from facebank.index.top_k import as_f32, as_i64, exact_top_k, merge_top_k, selector_for
from facebank.index.vectors import FaissBlob, FlatIndex, SearchParams, VectorIndex

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128


class HnswIndex(VectorIndex):
    """A navigable small-world graph. FAISS cannot remove from it, so removal
    zeroes the stored vector (the vector itself is gone at once) and hides the
    id from every search (a tombstone) until a background rebuild. An id that
    comes back before then (a face moved back to this segment) lives in a small
    exact side index meanwhile."""

    kind = family = "hnsw"

    def __init__(self, dim: int, faiss_index: faiss.Index | None = None, tombstones: np.ndarray | None = None,
                 ef_search: int = 0, side: FlatIndex | None = None) -> None:
        super().__init__(dim)
        if faiss_index is None:
            inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            faiss_index = faiss.IndexIDMap2(inner)
        self.index = faiss_index
        self._tombstones: set[int] = set(as_i64(tombstones).tolist()) if tombstones is not None else set()
        self._side = side or FlatIndex(dim)
        self.default_ef = ef_search or HNSW_EF_SEARCH

    def add(self, ids, vectors):
        ids, vectors = as_i64(ids), as_f32(vectors)
        back = np.isin(ids, self._dead())
        if back.any():
            self._side.add(ids[back], vectors[back])
        if (~back).any():
            self.index.add_with_ids(vectors[~back], ids[~back])

    def remove(self, ids):
        ids = as_i64(ids)
        removed = self._side.remove(ids)
        all_ids = faiss.vector_to_array(self.index.id_map)
        positions = np.nonzero(np.isin(all_ids, ids) & ~np.isin(all_ids, self._dead()))[0]
        if len(positions):
            inner = faiss.downcast_index(self.index.index)
            storage = faiss.downcast_index(inner.storage)
            xb = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * self.dim).reshape(-1, self.dim)
            xb[positions] = 0.0  # the vector itself is gone now; only the graph node is left
            self._tombstones.update(all_ids[positions].tolist())
        return removed + len(positions)

    def search(self, queries, k, params=SearchParams()):
        sp = faiss.SearchParametersHNSW(efSearch=max(params.ef_search or self.default_ef, k))
        sel = self._hidden_selector(params.allowed)
        if sel is not None:
            sp.sel = sel
        scores, labels = self.index.search(as_f32(queries), k, params=sp)
        if len(self._side) == 0:
            return scores, labels
        side_scores, side_labels = self._side.search(queries, min(k, len(self._side)), SearchParams(allowed=params.allowed))
        return merge_top_k(scores, labels, side_scores, side_labels, k)

    def search_subset(self, queries, k, allowed):
        """Exact among `allowed`: their rows of the graph's storage, scored at once
        (positions found in one vectorised pass), plus the side index's."""
        allowed = as_i64(allowed)
        all_ids = faiss.vector_to_array(self.index.id_map)
        rows = np.nonzero(np.isin(all_ids, allowed) & ~np.isin(all_ids, self._dead()))[0]
        storage = faiss.downcast_index(faiss.downcast_index(self.index.index).storage)
        xb = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * self.dim).reshape(-1, self.dim)
        scores, labels = exact_top_k(as_f32(queries), xb[rows], all_ids[rows].astype(np.int64), k)
        if len(self._side) == 0:
            return scores, labels
        side_scores, side_labels = self._side.search(queries, min(k, len(self._side)), SearchParams(allowed=allowed))
        return merge_top_k(scores, labels, side_scores, side_labels, k)

    def reconstruct(self, ids):
        ids = as_i64(ids)
        main_ids, main_vectors = super().reconstruct(ids[~np.isin(ids, self._dead())])
        side_ids, side_vectors = self._side.reconstruct(ids)
        return np.concatenate([main_ids, side_ids]), np.concatenate([main_vectors, side_vectors])

    def _dead(self) -> np.ndarray:
        return np.fromiter(self._tombstones, np.int64, len(self._tombstones))

    def _hidden_selector(self, allowed):
        if not self._tombstones:
            return selector_for(allowed)
        if allowed is not None:
            return selector_for(np.setdiff1d(as_i64(allowed), self._dead()))
        batch = faiss.IDSelectorBatch(self._dead())
        sel = faiss.IDSelectorNot(batch)
        sel.referenced = batch  # keep the inner selector alive as long as the outer one
        return sel

    def __len__(self) -> int:
        return int(self.index.ntotal) - len(self._tombstones) + len(self._side)

    def ids(self) -> np.ndarray:
        all_ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return np.concatenate([all_ids[~np.isin(all_ids, self._dead())], self._side.ids()])

    @property
    def needs_rebuild(self) -> bool:
        return bool(self._tombstones)

    def state(self):
        return {"ef_search": self.default_ef}, {
            "faiss": FaissBlob(self.index),
            "tombstones": self._dead(),
            "side": FaissBlob(self._side.index),
        }
