"""Room for faces added to a built IVF index: a list that must grow gets a sixteenth more.

A build sizes each inverted list exactly (ivf_fill.py), and a snapshot reads back
the same. FAISS's `add_with_ids` then appends to a list as a std::vector grows:
to twice its size at the first face the list gains, so after a rebuild about one
enrollment a list gives every list room for as many faces again. Measured on a
2M-face 8-bit IVF given 500k more faces (committed-2026-12-03-ivf-list-growth-cpu2):
483-599 MiB more anonymous memory through add_with_ids, 349 MiB this way, for
244 MiB of codes. Here the faces' lists are found first (the coarse quantizer, as
add_with_ids does), each list without room for them is moved into a buffer of its
new size plus a sixteenth, and the faces are added into that room (`add_core` with
the lists found).

A sixteenth, not an eighth (stop 38): the room is memory a start from the snapshot
does not hold (lists read back at their size). 600,000 faces loaded as the scale
bench loads them left 76 MB of room with an eighth, 43 MB with a sixteenth, the
process 1.12x -> 1.10x the anonymous memory of a start from its snapshot, at 5,905
and 5,752 faces/s (`committed-2026-12-07-load-anon-600k-cpu2`); the price is about
twice the copies of a list as it grows (each list copied about 17 times its final
size in all, not 9: memcpy, seconds in a load of millions).

The move goes through FAISS's own list API: the list is copied out, emptied,
resized to the room wanted and back to its size, and written back. An emptied
std::vector grown to n allocates exactly n under libstdc++ (Linux, where the
wheels are built); under libc++ it may round up to twice its old room, as
add_with_ids would."""

from __future__ import annotations

import faiss
import numpy as np

GROWTH = 16    # a list that must grow gets room for 1/GROWTH more faces than it then holds
MIN_ROOM = 4   # ...and at least this many
ADD_BLOCK = 65536  # faces added at a time (as add_with_ids blocks them): add_core encodes a block's codes at once


class ListRoom:
    """What each list of one IVF index has room for, as far as its adds have seen
    (never more than it has: a list's room starts at its size)."""

    def __init__(self) -> None:
        self._room: np.ndarray | None = None
        self._expected: np.ndarray | None = None

    def add(self, ivf: faiss.IndexIVF, ids: np.ndarray, vectors: np.ndarray, lists: np.ndarray | None = None) -> None:
        """Add float32 `vectors` under int64 `ids` (both contiguous) to `ivf`, into `lists`
        when their lists were found already (the quantizer's nearest centroid, int64)."""
        for start in range(0, len(ids), ADD_BLOCK):
            block_ids = ids[start:start + ADD_BLOCK]
            block = vectors[start:start + ADD_BLOCK]
            if lists is None:
                _, assigned = ivf.quantizer.search(block, 1)
            else:
                assigned = lists[start:start + ADD_BLOCK]
            assigned = np.ascontiguousarray(assigned.ravel(), np.int64)
            self._make_room(ivf, assigned)
            ivf.add_core(len(block_ids), faiss.swig_ptr(block), faiss.swig_ptr(block_ids), faiss.swig_ptr(assigned))

    def expect(self, sizes: np.ndarray | None) -> None:
        """The sizes the lists are being filled to (an index filled by adds, ivf_retrain.py): a list's
        room never grows past its expected size, so the lists end exactly as large as a build's
        (and by a sixteenth at a time past it, for faces beyond it). None: no longer expected."""
        self._expected = None if sizes is None else np.asarray(sizes, np.int64)

    def _make_room(self, ivf: faiss.IndexIVF, assigned: np.ndarray) -> None:
        invlists = ivf.invlists
        if self._room is None:
            self._room = np.fromiter((invlists.list_size(i) for i in range(ivf.nlist)), np.int64, ivf.nlist)
        lists, counts = np.unique(assigned[assigned >= 0], return_counts=True)
        sizes = np.fromiter((invlists.list_size(int(i)) for i in lists), np.int64, len(lists))
        wanted = sizes + counts
        short = wanted > self._room[lists]
        for list_no, size, want in zip(lists[short].tolist(), sizes[short].tolist(), wanted[short].tolist()):
            room = want + max(want // GROWTH, MIN_ROOM)
            if self._expected is not None and want <= self._expected[list_no]:
                room = min(room, int(self._expected[list_no]))
            _move(invlists, list_no, size, room)
            self._room[list_no] = room


def _move(invlists: faiss.InvertedLists, list_no: int, size: int, room: int) -> None:
    """List `list_no` (holding `size` faces) moved into a buffer with room for `room`."""
    code_size = invlists.code_size
    ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy() if size else None
    codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * code_size).copy() if size else None
    invlists.resize(list_no, 0)
    invlists.resize(list_no, room)  # from empty: one allocation of the room wanted, the old buffer freed
    invlists.resize(list_no, size)  # a smaller size keeps the allocation
    if size:
        invlists.update_entries(list_no, 0, size, faiss.swig_ptr(ids), faiss.swig_ptr(codes))
