"""An exact index moved into a new IVF from its tail, its memory handed back as it goes.

A collection that outgrows exact search becomes an IVF (at 50,000 faces on the
CPU, or whenever its kind is changed): built beside the exact index, the new
one held every face a second time (1.94-1.97x the steady memory building the
IVF of a 1M-face exact index in the scale bench). FAISS keeps an exact index's
vectors in one buffer that never shrinks (a std::vector resized down keeps its
room), so the faces move from its end, a piece of PIECE faces at a time: they
are added to their new lists, the index is cut short before them (its count,
its buffer's size and its id map), and the pages they filled are handed back to
the kernel (`resident_pages.release_unused`: the buffer's room past its size is
never read again, and a page touched again there comes back zeroed). Together
the two hold every face once, plus a piece.

The plan (each face's new list, so that every list is allocated once at its
size) reads the faces by id, in the order they were when the move began: a
removal in between shifts the positions after it, never the ids.
"""

from __future__ import annotations

import faiss
import numpy as np

from facebank.index.moving_index import MovingIndex
from facebank.index.resident_pages import release_unused
from facebank.index.vectors import FlatIndex, IvfIndex, VectorIndex

PIECE = 256  # faces a move hands back at once (512 KB of float32 at 512-d)


def can_move_flat(index: VectorIndex) -> bool:
    """An exact index of this CPU (FAISS's flat vectors behind an id map, as FlatIndex makes and a snapshot
    restores) whose vectors FAISS owns (not a view of memory someone else holds: its pages are handed back)."""
    if type(index) is not FlatIndex or not isinstance(index.index, faiss.IndexIDMap2):
        return False
    flat = faiss.downcast_index(index.index.index)
    return isinstance(flat, faiss.IndexFlat) and bool(flat.codes.is_owned)


class MovingFlat(MovingIndex):
    """An exact index (`old`) moving into an IVF (`new`) PIECE faces at a time from its end."""

    def __init__(self, old: FlatIndex, new: IvfIndex) -> None:
        super().__init__(old, new)
        self._map = old.index
        self._flat = faiss.downcast_index(old.index.index)
        self._order = old.ids()  # the faces when the move began: the plan reads them by id
        self._gone = np.zeros(0, np.int64)  # removed from `old` since (sorted)
        self._plan_ids: list[np.ndarray] = []
        self._plan_lists: list[np.ndarray] = []
        self._planned: tuple[np.ndarray, np.ndarray] | None = None  # (ids sorted, their lists)

    @property
    def pieces(self) -> int:
        return -(-len(self._order) // PIECE)

    @property
    def left(self) -> int:
        return -(-int(self._map.ntotal) // PIECE)

    @property
    def code_size(self) -> int:
        return int(self._flat.code_size)

    @property
    def trim_bytes(self) -> int:
        """Every piece: the faces' pages go back to the kernel as they move, but the new lists grow
        by a sixteenth at a time, and a list's old buffer, freed, stays in the allocator's arenas
        until the heap is trimmed (an IVF's own freed lists are reused for the new ones; the exact
        buffer's pages cannot be). Moving 120,000 faces (240 MB): 57 MB above the start trimmed
        every 8 MB moved, 31-36 MB trimmed every piece of 256-1024 faces (bench-free probe)."""
        return PIECE * self.code_size

    def remove(self, ids):
        in_old, _ = self._split(ids)
        removed = super().remove(ids)
        if len(in_old):
            self._gone = np.union1d(self._gone, in_old)
        return removed

    def read_piece(self, piece: int, copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
        ids = self._order[piece * PIECE:(piece + 1) * PIECE]
        ids = ids[~np.isin(ids, self._gone)]
        if not len(ids):
            return ids, np.zeros((0, self.dim), np.float32)
        return ids, self._map.reconstruct_batch(ids)  # a copy whatever `copy` says: the plan reads by id

    def plan(self, piece: int, ids: np.ndarray, lists: np.ndarray) -> None:
        self._plan_ids.append(ids)
        self._plan_lists.append(lists)
        if piece == self.pieces - 1:
            ids, lists = np.concatenate(self._plan_ids), np.concatenate(self._plan_lists)
            order = np.argsort(ids, kind="stable")
            self._planned = (ids[order], lists[order])
            self._plan_ids, self._plan_lists = [], []

    def move_next(self) -> int:
        n = int(self._map.ntotal)
        start = max(0, n - PIECE)
        code = self.code_size
        ids = faiss.rev_swig_ptr(self._map.id_map.data(), n)[start:].astype(np.int64)
        vectors = faiss.rev_swig_ptr(self._flat.codes.data(), n * code).reshape(n, code)[start:].view(np.float32)
        self.new.add(ids, vectors, self._lists_of(ids, vectors))
        self._mark(ids)
        address = faiss.rev_swig_ptr(self._flat.codes.data(), 1).ctypes.data
        self._map.ntotal = self._flat.ntotal = start  # cut short before the faces moved: nothing is copied
        self._flat.codes.resize(start * code)
        self._map.id_map.resize(start)
        release_unused(address + start * code, (n - start) * code)
        return n - start

    def _lists_of(self, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """The planned list of each face (found now for any the plan did not read)."""
        lists = np.full(len(ids), -1, np.int64)
        if self._planned is not None and len(self._planned[0]):
            planned_ids, planned_lists = self._planned
            at = np.minimum(np.searchsorted(planned_ids, ids), len(planned_ids) - 1)
            hit = planned_ids[at] == ids
            lists[hit] = planned_lists[at[hit]]
        missing = lists < 0
        if missing.any():
            lists[missing] = self.nearest(np.ascontiguousarray(vectors[missing]))
        return lists
