"""Filling a freshly trained IVF index with every face of a source, each list allocated once.

`add_with_ids` appends to each inverted list, a std::vector that doubles as it
grows: an index built that way holds about 1.35x its codes (measured at 200k
faces: 0.56 GB for 0.42 GB of codes), while one read from a snapshot holds
exactly its codes. At 10M faces that slack alone is 2 GB. Here the faces are
first assigned to lists (the source read once, the calibration fed from the
same chunks), every list is sized once to what it will hold, and a second read
writes each face's code into its place."""

from __future__ import annotations

from typing import Callable

import faiss
import numpy as np

from facebank.index.vector_source import VectorSource

Feed = Callable[[np.ndarray, np.ndarray], None]


def fill_exactly(ivf: faiss.IndexIVF, source: VectorSource, feed: Feed | None = None) -> None:
    """Add every face of `source` to the trained, empty `ivf` (direct map rebuilt after);
    `feed(ids, vectors)` sees each chunk of the first read. A face gone by the
    second read (forgotten meanwhile) is left out."""
    assert ivf.ntotal == 0, "fill_exactly fills an empty index"
    found, lists = [], []
    for chunk_ids, chunk in source.chunks():
        _, assigned = ivf.quantizer.search(np.ascontiguousarray(chunk, np.float32), 1)
        found.append(chunk_ids)
        lists.append(assigned.ravel().astype(np.int32))
        if feed is not None:
            feed(chunk_ids, chunk)
    if not found:
        return
    ids, lists = np.concatenate(found), np.concatenate(lists)
    del found
    counts = np.bincount(lists, minlength=ivf.nlist)
    order = np.argsort(lists, kind="stable")  # within a list, faces by ascending id
    offset = np.empty(len(ids), np.int64)
    offset[order] = np.arange(len(ids)) - np.repeat(np.cumsum(counts) - counts, counts)
    del order
    ivf.set_direct_map_type(faiss.DirectMap.NoMap)
    invlists = ivf.invlists
    for list_no in np.flatnonzero(counts).tolist():
        invlists.resize(list_no, int(counts[list_no]))  # one allocation of the list's final size
    written = np.zeros(len(ids), bool)
    code_size = invlists.code_size
    for chunk_ids, chunk in source.chunks():
        rows = np.searchsorted(ids, chunk_ids)
        _write(ivf, invlists, chunk_ids, np.ascontiguousarray(chunk, np.float32), lists[rows], offset[rows], code_size)
        written[rows] = True
    gone = np.flatnonzero(~written)
    zero = np.zeros(code_size, np.uint8)
    for row in gone.tolist():  # their places hold zero codes: named, then removed with the direct map
        face = np.array([ids[row]], np.int64)
        invlists.update_entries(int(lists[row]), int(offset[row]), 1, faiss.swig_ptr(face), faiss.swig_ptr(zero))
    ivf.ntotal = len(ids)
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    if len(gone):
        missing = np.ascontiguousarray(ids[gone], np.int64)
        ivf.remove_ids(faiss.IDSelectorArray(len(missing), faiss.swig_ptr(missing)))


def _write(ivf, invlists, ids: np.ndarray, vectors: np.ndarray, lists: np.ndarray, offsets: np.ndarray, code_size: int) -> None:
    """Codes of a chunk's faces written at their places."""
    n = len(ids)
    codes = np.empty((n, code_size), np.uint8)
    # Held in a name while FAISS reads it: a temporary passed through swig_ptr is freed as soon as
    # swig_ptr returns, and FAISS then read list numbers from freed memory (a face left with a zero code).
    list_nos = np.ascontiguousarray(lists, np.int64)
    ivf.encode_vectors(n, faiss.swig_ptr(vectors), faiss.swig_ptr(list_nos), faiss.swig_ptr(codes), False)
    ids = np.ascontiguousarray(ids, np.int64)
    by_list = np.argsort(lists, kind="stable")  # a list's faces of this chunk, by ascending id...
    sorted_lists, sorted_offsets = lists[by_list], offsets[by_list]
    # ...hold consecutive places, but for faces forgotten between the reads: one write per run
    bounds = np.flatnonzero((np.diff(sorted_lists) != 0) | (np.diff(sorted_offsets) != 1)) + 1
    for run in np.split(by_list, bounds):
        run_ids = np.ascontiguousarray(ids[run])
        run_codes = np.ascontiguousarray(codes[run])
        invlists.update_entries(int(lists[run[0]]), int(offsets[run[0]]), len(run), faiss.swig_ptr(run_ids), faiss.swig_ptr(run_codes))
