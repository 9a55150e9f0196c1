"""A segment's faces as a build reads them: the ids in memory, the vectors fetched by id.

Every vector of ten million faces as float32 is 20 GB: a build must never hold
them all. It holds the ids (8 bytes a face), fetches the training sample and
the calibration's queries by id, and adds the rest chunk by chunk. The ids are
those of one consistent read of the catalog (at a change-log position); a face
removed after it is simply not returned by a fetch, and the changes after that
position are replayed onto the new index before it serves."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

class SourceChanged(Exception):
    """The faces a build reads changed under it as a whole (the collection moved to
    another model, or was dropped): the build is dropped, the live index stays."""


CHUNK = 32_768  # faces fetched at once: 64 MB of float32 at 512 dimensions
FETCH_SPREAD = 1024  # faces fetched at once when drawn from all over the collection (vectors_of)
LIST_BLOCK = 65_536  # face ids listed between two hand-backs of the catalog's pages (listed_ids)

# fetch(ids ascending) -> (ids of those still present, ascending; their vectors)
Fetch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class VectorSource:
    def __init__(self, ids, dim: int, fetch: Fetch, chunk: int = CHUNK) -> None:
        self.ids = np.unique(np.asarray(ids, np.int64))
        self.dim = dim
        self.chunk = chunk
        self._fetch = fetch

    @classmethod
    def of(cls, ids, vectors, chunk: int = CHUNK) -> "VectorSource":
        """Vectors already in memory (a test, a bench, a collection being made)."""
        ids = np.asarray(ids, np.int64)
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(len(ids), -1)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]

        def fetch(wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            at = np.minimum(np.searchsorted(sorted_ids, wanted), max(len(sorted_ids) - 1, 0))
            present = sorted_ids[at] == wanted if len(sorted_ids) else np.zeros(len(wanted), bool)
            return wanted[present], vectors[order[at[present]]]

        return cls(ids, vectors.shape[1], fetch, chunk)

    def __len__(self) -> int:
        return len(self.ids)

    def vectors_of(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(those of `ids` still present, ascending; their vectors), read FETCH_SPREAD at a
        time. Faces drawn from all over the collection (a training sample, calibration
        queries) each touch their own catalog page, and the kernel maps the cached pages
        around each one it faults in (fault-around: 64 KB), so one fetch of 32,768 faces
        drawn from 1M left 0.3-1 GB of catalog pages resident until it returned and handed
        them back (store._segment_source); FETCH_SPREAD faces map at most 64 MB."""
        wanted = np.unique(np.asarray(ids, np.int64))
        if len(wanted) <= FETCH_SPREAD:
            return self._fetch(wanted) if len(wanted) else (wanted, np.zeros((0, self.dim), np.float32))
        out = np.empty((len(wanted), self.dim), np.float32)
        found, at = [], 0
        for start in range(0, len(wanted), FETCH_SPREAD):
            ids_part, vectors = self._fetch(wanted[start:start + FETCH_SPREAD])
            out[at:at + len(ids_part)] = vectors
            found.append(ids_part)
            at += len(ids_part)
        return np.concatenate(found), out[:at]

    def take(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """The faces at these positions of `ids` (those still present)."""
        return self.vectors_of(self.ids[np.asarray(rows, np.int64)])

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every face still present, `chunk` at a time, ascending."""
        for start in range(0, len(self.ids), self.chunk):
            found, vectors = self._fetch(self.ids[start:start + self.chunk])
            if len(found):
                yield found, vectors

    def without(self, removed) -> "VectorSource":
        """The same source less these faces (forgets that came after the read)."""
        removed = np.asarray(removed, np.int64)
        if not len(removed) or not np.isin(removed, self.ids).any():
            return self
        return VectorSource(self.ids[~np.isin(self.ids, removed)], self.dim, self._fetch, self.chunk)


def listed_ids(face_ids: Iterable[int], release: Callable[[], object]) -> np.ndarray:
    """A segment's face ids as listed from the catalog, gathered LIST_BLOCK at a time into
    arrays (not one Python list: 360 MB for a moment at 10M) with `release` (the catalog's
    pages handed back) after each block. The rows lie among the embeddings' pages of a
    catalog its enrollments wrote, and the kernel maps the cached pages around each one
    read: listing 1M faces in one go held 1 GB of them until it ended."""
    blocks, block = [], []
    for face_id in face_ids:
        block.append(face_id)
        if len(block) == LIST_BLOCK:
            blocks.append(np.asarray(block, np.int64))
            block = []
            release()
    blocks.append(np.asarray(block, np.int64))
    release()
    return np.concatenate(blocks)
