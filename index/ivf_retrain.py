"""Rebuilding an IVF index by moving it onto its new centroids list by list.

A forget whose faces trained the centroids calls for new ones (the forgotten
faces must not shape how anyone else is searched); a collection that grew 4x
or shrank 8x gets new lists, and one past 2M faces 8-bit codes. Built beside
the live index (SegmentManager.build_fresh), the new index held every face a
second time: a retrain peaked at 2.08x the settled memory at 1M faces and 2.06x
at 10M, the 10M load at 2.2x during its 8M resize
(bench/results/committed-2026-12-03-serve10m-room-cpu2). Here the new index
starts empty beside the old one, and the old one's lists move into it a few at
a time, each list's memory freed once its faces are in the new lists: together
the two hold every face once.

While they move, `MovingIvf` is the segment's index (moving_index.py: a face is
in exactly one of the two, a search asks both, each at its own nprobe). An exact
index becomes an IVF the same way, from its tail (flat_move.py); `move_onto`
runs either move.

Nothing is read back from the catalog but the training sample: the lists hold
the vectors themselves ("ivf") or 8-bit codes over the fixed range [-1, 1],
encoded without the list's centroid ("ivf_sq8"), so a face's code is the same
under the new centroids (vectors become the codes a build would make), and its
new list is the one nearest its stored vector. Never from 8-bit codes back to
vectors: those come from the catalog (build_fresh).
A first pass finds every face's new list (with the searches going on), so each
new list grows to exactly the size it will hold (ivf_growth.ListRoom.expect).

FAISS frees a list's buffer only when the list itself is destroyed, which its
Python API allows only by shrinking the vector of lists: the lists move from the
last one down, so every list above the one freed is empty already and is made
again, empty. A snapshot never reads a moving index (segments.py); a restart in
the middle loads the last snapshot (for a retrain, the one written before it)
and rebuilds again.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import faiss
import numpy as np

from facebank.index.faults import delay_point
from facebank.index.ivf_calibration import Calibration
from facebank.index.resident_pages import trim_heap
from facebank.index.flat_move import MovingFlat, can_move_flat
from facebank.index.moving_index import MovingIndex
from facebank.index.vectors import VectorIndex, IvfIndex

log = logging.getLogger(__name__)

FEED_CHUNK = 4096  # faces handed to the calibration's ground truth at once (8 MB of float32 at 512-d)
MOVE_HOLD_S = 0.05  # lists are moved under the segment's write lock for at most about this long at a time


class MovingIvf(MovingIndex):
    """An IVF index (`old`) moving list by list into one with new centroids (`new`)."""

    def __init__(self, old: IvfIndex, new: IvfIndex) -> None:
        assert new.family in (old.family, "ivf_sq8")  # 8-bit codes never go back to float vectors
        super().__init__(old, new)
        # Until it is calibrated (once every face is in), the new side visits the same share of its lists.
        new.default_nprobe = max(1, min(new.nlist, round(old.default_nprobe * new.nlist / old.nlist)))
        self._left = old.nlist  # old lists [left, nlist) are empty and freed
        self._planned: list[np.ndarray | None] = [None] * old.nlist

    # -- the move ------------------------------------------------------------------------

    @property
    def pieces(self) -> int:
        return self.old.nlist

    @property
    def left(self) -> int:
        return self._left

    @property
    def code_size(self) -> int:
        return self.old.index.invlists.code_size

    def read_piece(self, piece: int, copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
        return self.read(piece, copy)

    def plan(self, piece: int, ids: np.ndarray, lists: np.ndarray) -> None:
        self._planned[piece] = lists

    def move_next(self) -> int:
        list_no = self._left - 1
        lists, self._planned[list_no] = self._planned[list_no], None
        return self.move(list_no, lists)

    def move(self, list_no: int, lists: np.ndarray | None) -> int:
        """Old list `list_no` (the last one not yet moved) into the new lists (`lists`: its planned
        ones, found again if a removal changed the list since); its memory freed. Returns its faces."""
        assert list_no == self._left - 1, "lists move from the last one down"
        ids, vectors = self.read(list_no, copy=False)  # under the write lock: the list is read in place
        if len(ids):
            if lists is None or len(lists) != len(ids):  # removals only shrink a list: same size, same faces
                lists = self.nearest(vectors)
            self.new.add(ids, vectors, np.asarray(lists, np.int64))
            self._mark(ids)
            if self.old.remove(ids, scrub=False) != len(ids):  # the list's buffer is freed below
                raise RuntimeError(f"IVF list {list_no} changed while it moved")
        codes = faiss.downcast_InvertedLists(self.old.index.invlists).codes
        codes.resize(list_no)        # destroys the lists from list_no up (all empty now): their buffers freed
        codes.resize(self.old.nlist)  # ...and makes them again, empty (the outer vector keeps its room: nothing moves)
        self._left = list_no
        return len(ids)

    def read(self, list_no: int, copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(ids, stored vectors) of old list `list_no`'s faces. `copy=False`: float vectors are the
        list's own memory, valid while the caller holds the segment's lock and the list is unchanged
        (a copy of each list read was 22% of the vectors' size above the start at 120k faces in 32
        lists, the allocator keeping freed copies between heap trims)."""
        invlists = self.old.index.invlists
        n = invlists.list_size(list_no)
        if not n:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), n).astype(np.int64)
        codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), n * invlists.code_size).reshape(n, -1)
        if self.old.family != "ivf":
            return ids, self.old.index.sq.decode(codes)  # a new array of floats
        vectors = codes.view(np.float32)
        return ids, vectors.copy() if copy else vectors


def can_move(index: VectorIndex) -> bool:
    """An index of this CPU that can move into an IVF piece by piece: an IVF whose lists FAISS
    keeps in memory (what a build or a snapshot makes), or an exact index (flat_move.py)."""
    if type(index) is IvfIndex:
        return isinstance(faiss.downcast_InvertedLists(index.index.invlists), faiss.ArrayInvertedLists)
    return can_move_flat(index)


def move_onto(segment, new: IvfIndex, calibration: Calibration | None, vectors_of, *, target_recall: float, keeps: bool,
              stop: Callable[[], bool], current: Callable[[], bool]) -> bool:
    """Make `new` (trained, empty; the same kind, or 8-bit codes where it held float vectors) the
    index of `segment` (which serves an IvfIndex, or a FlatIndex) by moving the faces into it a
    list (or, from an exact index, a piece of its tail) at a time;
    `calibration` (None when nprobe is fixed) is fed every face and sets its nprobe once they
    are in, at least the old one's if `keeps` (a retrain: IvfIndex.train's `like`).
    False: `stop()` or `not current()` (the segment was dropped or replaced) left it midway,
    `segment` still served by a MovingIndex."""
    old = segment.index
    with segment.lock.write():
        moving = MovingIvf(old, new) if type(old) is IvfIndex else MovingFlat(old, new)
        segment.index = moving
        segment.retrain_pending = False  # set again by a forget of one of the new sample's faces
    try:
        return _move_all(segment, moving, calibration, vectors_of, target_recall, keeps, stop, current)
    except BaseException:
        segment.retrain_pending = True  # served as it is; the next rebuild builds it again from the catalog
        raise


def _move_all(segment, moving: MovingIndex, calibration: Calibration | None, vectors_of, target_recall: float, keeps: bool,
              stop: Callable[[], bool], current: Callable[[], bool]) -> bool:
    old, new = moving.old, moving.new
    expected = np.zeros(new.nlist, np.int64)
    feed = _Chunked(calibration.feed if calibration is not None else None)
    for piece in range(moving.pieces):  # first pass: every face's new list, found while searches go on
        with segment.lock.read():  # read in place unless the calibration keeps the vectors
            ids, vectors = moving.read_piece(piece, copy=calibration is not None)
            lists = moving.nearest(vectors)
            moving.plan(piece, ids, lists)
        expected += np.bincount(lists, minlength=new.nlist)
        feed(ids, vectors)
        if stop() or not current():
            return False
    feed.flush()
    with segment.lock.write():
        held = np.fromiter((new.index.invlists.list_size(i) for i in range(new.nlist)), np.int64, new.nlist)  # adds meanwhile
        new.expect_sizes(expected + held)
    code_size, trim_at, moved = moving.code_size, moving.trim_bytes, 0
    halfway, paused = moving.left // 2, False
    while moving.left:
        with segment.lock.write():  # a few pieces at a time: a search waits for at most about MOVE_HOLD_S of moves
            until = time.monotonic() + MOVE_HOLD_S
            while moving.left:
                moved += moving.move_next() * code_size
                if (moving.left <= halfway and not paused) or moved >= trim_at or time.monotonic() >= until:
                    break
        if moved >= trim_at:  # freed lists go back to the allocator, which keeps them until asked
            trim_heap()
            moved = 0
        if moving.left <= halfway and not paused:
            paused = True
            delay_point("rebuild:moving", interrupt=stop)
        if stop() or not current():
            return False
    new.expect_sizes(None)
    with segment.lock.write():
        segment.index = new
        segment.generation += 1
        segment.changes_since_snapshot += 1
        segment.snapshot_seq = 0  # the one on disk is from before the rebuild: the next one is due now
    if calibration is not None:  # on the new lists, searched between writes
        searched = _ReadLocked(new, segment.lock)
        calibration.finish(searched, old if keeps else None, vectors_of, target_recall)
        new.default_nprobe, new.calibrated_recall = searched.default_nprobe, searched.calibrated_recall
    old.release()
    trim_heap()
    return True


class _Chunked:
    """Faces handed on FEED_CHUNK at a time."""

    def __init__(self, feed) -> None:
        self.feed, self.ids, self.vectors, self.n = feed, [], [], 0

    def __call__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self.feed is None or not len(ids):
            return
        self.ids.append(ids)
        self.vectors.append(vectors)
        self.n += len(ids)
        if self.n >= FEED_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.n:
            self.feed(np.concatenate(self.ids), np.concatenate(self.vectors))
        self.ids, self.vectors, self.n = [], [], 0


class _ReadLocked:
    """What calibration reads of an IVF index that serves already: each search under the
    segment's read lock, writes going on between them (calibrate_nprobe searches for
    minutes at 10M faces)."""

    def __init__(self, ivf: IvfIndex, lock) -> None:
        self.nlist, self.default_nprobe, self.calibrated_recall = ivf.nlist, ivf.default_nprobe, ivf.calibrated_recall
        self.index = _LockedSearch(ivf.index, lock)


class _LockedSearch:
    def __init__(self, index: faiss.IndexIVF, lock) -> None:
        self._index, self._lock = index, lock
        self.quantizer = index.quantizer  # the centroids: never written

    def search(self, *args, **kwargs):
        with self._lock.read():
            return self._index.search(*args, **kwargs)
