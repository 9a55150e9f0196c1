"""An index moving into a trained IVF while it serves: the part every move shares.

A rebuild into an IVF used to build the new index beside the one that served,
holding every face twice. Instead the new index starts empty and the faces move
into it a piece at a time, each piece's memory freed once its faces are in the
new lists (ivf_retrain.py moves an IVF list by list, flat_move.py an exact
index from its tail). Until the last piece has moved, the `MovingIndex` is the
segment's index: a face is in exactly one of the two (pieces move under the
segment's write lock), a search asks both and merges, an add goes to the new
one, a removal to whichever holds the face. A snapshot never reads it.

The move itself (`move_onto`) needs of each kind: how many pieces to read for
the plan (`pieces`, `read_piece`, `plan`), how many are left to move (`left`)
and the next one moved (`move_next`).
"""

from __future__ import annotations

from abc import abstractmethod

import faiss
import numpy as np

from facebank.index.top_k import as_i64, exact_top_k, merge_top_k
from facebank.index.vectors import SearchParams, VectorIndex, IvfIndex

TRIM_BYTES = 64 * 2**20  # an IVF's codes moved between two returns of its freed lists' memory to the kernel (or 1/32 of them all)


class MovingIndex(VectorIndex):
    """`old` (any in-memory index of this CPU) moving into `new` (a trained IVF, empty at first)."""

    moving = True  # not snapshotted: its memory is being freed

    def __init__(self, old: VectorIndex, new: IvfIndex) -> None:
        super().__init__(old.dim)
        assert len(new) == 0
        self.old, self.new = old, new
        self.kind = self.family = new.family
        self.trained_n = new.trained_n
        self.default_nprobe = getattr(old, "default_nprobe", new.default_nprobe)
        self.calibrated_recall = getattr(old, "calibrated_recall", 0.0)
        self._in_new = np.zeros(0, bool)  # by face id: held by `new`
        new.index.set_direct_map_type(faiss.DirectMap.Hashtable)

    # -- what each kind of old index moves -------------------------------------------------

    @property
    @abstractmethod
    def pieces(self) -> int:
        """How many pieces the plan reads (`read_piece`), fixed when the move begins."""

    @abstractmethod
    def read_piece(self, piece: int, copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors as stored) of one piece still in `old`; the caller holds the read lock."""

    @abstractmethod
    def plan(self, piece: int, ids: np.ndarray, lists: np.ndarray) -> None:
        """Keep the new list found for each face of a piece read, for its move."""

    @property
    @abstractmethod
    def left(self) -> int:
        """Pieces not moved yet."""

    @abstractmethod
    def move_next(self) -> int:
        """Move the next piece into the new lists and free its memory (the caller holds the write
        lock); returns its faces."""

    @property
    @abstractmethod
    def code_size(self) -> int:
        """Bytes a face takes in `old`."""

    @property
    def trim_bytes(self) -> int:
        """Bytes moved between two returns of the freed memory to the kernel (trim_heap)."""
        return max(1, min(TRIM_BYTES, len(self.old) * self.code_size // 32))

    # -- the index, while it moves ---------------------------------------------------

    def add(self, ids, vectors):
        ids = as_i64(ids)
        self.new.add(ids, vectors)
        self._mark(ids)

    def remove(self, ids):
        in_old, in_new = self._split(ids)
        return (self.old.remove(in_old) if len(in_old) else 0) + (self.new.remove(in_new) if len(in_new) else 0)

    def search(self, queries, k, params=SearchParams()):
        old_scores, old_ids = self.old.search(queries, k, params)  # each at its own nprobe unless the collection fixes one
        new_scores, new_ids = self.new.search(queries, k, params)
        return merge_top_k(old_scores, old_ids, new_scores, new_ids, k)

    def search_subset(self, queries, k, allowed):
        parts = [side.search_subset(queries, k, some) for side, some in zip((self.old, self.new), self._split(allowed)) if len(some)]
        if not parts:
            return exact_top_k(np.asarray(queries, np.float32), np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), k)
        return parts[0] if len(parts) == 1 else merge_top_k(*parts[0], *parts[1], k)

    def reconstruct(self, ids):
        in_old, in_new = self._split(ids)
        (a, va), (b, vb) = self.old.reconstruct(in_old), self.new.reconstruct(in_new)
        return np.concatenate([a, b]), np.concatenate([va, vb])

    def ids(self) -> np.ndarray:
        return np.concatenate([self.old.ids(), self.new.ids()])

    def __len__(self) -> int:
        return len(self.old) + len(self.new)

    @property
    def index(self) -> faiss.IndexIVF:
        """The new centroids' index (a build that replaces this one reads its quantizer as `like`'s)."""
        return self.new.index

    @property
    def training_ids(self) -> np.ndarray:
        return self.new.training_ids

    def trained_on(self, ids) -> bool:
        """The old centroids (if any) still search the faces not yet moved."""
        return self.old.trained_on(ids) or self.new.trained_on(ids)

    @property
    def nlist(self) -> int:
        return self.new.nlist

    def state(self):
        raise RuntimeError("an index being moved into a new IVF is not snapshotted")

    def release(self) -> None:
        self.old.release()
        self.new.release()

    def nearest(self, vectors: np.ndarray) -> np.ndarray:
        """The new list of each vector (the new centroids never change: no lock needed)."""
        if not len(vectors):
            return np.zeros(0, np.int32)
        _, lists = self.new.index.quantizer.search(vectors, 1)
        return lists.ravel().astype(np.int32)

    def _mark(self, ids: np.ndarray) -> None:
        top = int(ids.max()) + 1 if len(ids) else 0
        if top > len(self._in_new):
            grown = np.zeros(max(top, len(self._in_new) + len(self._in_new) // 4), bool)
            grown[:len(self._in_new)] = self._in_new
            self._in_new = grown
        self._in_new[ids] = True

    def _split(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(those of `ids` in old, those in new)."""
        ids = as_i64(ids)
        known = (ids >= 0) & (ids < len(self._in_new))
        in_new = np.zeros(len(ids), bool)
        in_new[known] = self._in_new[ids[known]]
        return ids[~in_new], ids[in_new]
