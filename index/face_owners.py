"""face id -> identity for every search hit, held in memory and filled after the start.

Reading the map from the catalog checks each row's integrity tag in Python
(1.66 s of a 3.5 s start at 300k faces under a profiler; starts at 1M were
2.3-5.3 s longer with it, so tens of seconds at 10M). So a start no longer
waits for it: the map begins with every face UNKNOWN, a
background `OwnerLoader` fills it a batch of faces at a time, and until it is
done a lookup that meets an UNKNOWN face reads that face's row from the catalog
(the same authenticated row, so the answer is the same; a damaged row is left
out and named either way).

A batch is read in its own transaction and may be older than a commit that
lands before it is written into the map: every change committed since loading
began is kept aside and laid over each batch as it is written, so the map never
goes back to a value the catalog no longer holds.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import numpy as np

from facebank.index.faults import delay_point

log = logging.getLogger(__name__)

UNKNOWN = -2   # not read from the catalog yet; -1: no such face; 0: not enrolled
LOAD_BATCH = 100_000

ReadOwners = Callable[[np.ndarray], np.ndarray]        # face ids -> iids from the catalog (-1: none or damaged)
ReadFacesOf = Callable[[set], np.ndarray]              # iids -> their face ids from the catalog, ascending
ReadBatch = Callable[[int, int], tuple[np.ndarray, np.ndarray]]   # (after, limit) -> (face ids > after, iids)


class FaceOwners:
    """face id -> iid (0: not enrolled, -1: no such face), as one dense array."""

    def __init__(self) -> None:
        self._owner = np.full(1024, -1, np.int64)
        self._lock = threading.Lock()
        self.loading = False
        self._since_load: dict[int, int] = {}   # changes committed while loading: face id -> iid
        self._read_owners: ReadOwners | None = None
        self._read_faces_of: ReadFacesOf | None = None
        self.loaded = threading.Event()
        self.loaded.set()

    def begin_loading(self, read_owners: ReadOwners, read_faces_of: ReadFacesOf) -> None:
        """Every face is UNKNOWN until a batch or a commit sets it."""
        with self._lock:
            self._owner = np.full(1024, UNKNOWN, np.int64)
            self._since_load = {}
            self._read_owners, self._read_faces_of = read_owners, read_faces_of
            self.loaded.clear()
            self.loading = True

    def load_batch(self, face_ids: np.ndarray, iids: np.ndarray, upto: int) -> None:
        """Rows read in one transaction, covering every face after the last batch up to `upto`;
        what was committed since loading began is laid over them (it may be newer)."""
        with self._lock:
            if len(face_ids):
                self._grow(int(face_ids[-1]))
                self._owner[face_ids] = iids
            for face_id, iid in self._since_load.items():
                if face_id <= upto:
                    self._set(face_id, iid)

    def finish_loading(self) -> None:
        with self._lock:
            owner = self._owner
            owner[owner == UNKNOWN] = -1   # read by no batch, set by no commit: no such face
            self._since_load = {}
            self.loading = False
            self.loaded.set()

    def update(self, changes: dict[int, int]) -> None:
        if changes:
            with self._lock:
                for face_id, iid in changes.items():
                    self._set(face_id, iid)
                if self.loading:
                    self._since_load.update(changes)

    def _grow(self, face_id: int) -> None:
        if face_id >= len(self._owner):   # faces past the end: unknown while loading, else none
            grown = np.full(max(face_id + 1, 2 * len(self._owner)), UNKNOWN if self.loading else -1, np.int64)
            grown[: len(self._owner)] = self._owner
            self._owner = grown  # readers holding the old array still see a consistent one

    def _set(self, face_id: int, iid: int) -> None:
        self._grow(face_id)
        self._owner[face_id] = iid

    def faces_of(self, iids) -> np.ndarray:
        """Every face owned by one of these identities (ascending), from the array in one pass
        (from the catalog while the map is loading)."""
        if not iids:
            return np.zeros(0, np.int64)
        if self.loading:   # read under no lock: a load that ends meanwhile leaves the catalog's answer right
            return self._read_faces_of(set(iids))
        owner = self._owner
        wanted = np.zeros(max(iids) + 2, bool)  # [0]: not enrolled, [-1]: beyond; both False
        wanted[np.fromiter(iids, np.int64, len(iids))] = True
        return np.flatnonzero(wanted[np.clip(owner, 0, len(wanted) - 1)]).astype(np.int64)

    def lookup(self, face_ids: np.ndarray) -> np.ndarray:
        owner = self._owner
        ids = np.asarray(face_ids, np.int64)
        inside = (ids >= 0) & (ids < len(owner))
        out = np.full(ids.shape, -1, np.int64)
        out[inside] = owner[ids[inside]]
        if self.loading:
            out[ids >= len(owner)] = UNKNOWN
        unknown = out == UNKNOWN
        if unknown.any():   # not loaded yet: from the catalog
            out[unknown] = self._read_owners(ids[unknown])
        return out


class OwnerLoader:
    """Fills a FaceOwners from the catalog in the background, LOAD_BATCH faces a read."""

    def __init__(self, owners: FaceOwners, read_batch: ReadBatch) -> None:
        self._owners = owners
        self._read_batch = read_batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="facebank-owner-map", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Leave the load (the map keeps reading unknown faces from the catalog) and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        after = -1
        try:
            while not self._stop.is_set():
                face_ids, iids = self._read_batch(after, LOAD_BATCH)
                delay_point("owners:batch-read", interrupt=self._stop.is_set)
                if self._stop.is_set():
                    return
                if not len(face_ids):
                    self._owners.finish_loading()
                    return
                after = int(face_ids[-1])
                self._owners.load_batch(face_ids, iids, after)
        except Exception:  # the map stays partly loaded; lookups go on reading the catalog
            log.exception("loading the face owner map stopped; unknown faces are read from the catalog")


def catalog_readers(read, damage, release) -> tuple[ReadOwners, ReadFacesOf, ReadBatch]:
    """The map's three reads of the catalog (`read`: FaceStore.read); damaged rows are left out
    and reported to `damage`. `release` (Catalog.release_pages) after each batch of the load:
    the owner rows lie among every other table's pages in a catalog that was never compacted,
    and the kernel maps the cached pages around each one read (fault-around), so the load
    left most of a freshly written 1M-face catalog resident (1 GB) after a start."""

    def owners(face_ids: np.ndarray) -> np.ndarray:
        with read(tolerant=True) as t:
            found = t.face_owners(face_ids.tolist())
            damage.add(t.damaged)
        return np.asarray(found, np.int64)

    def faces_of(iids: set) -> np.ndarray:
        with read(tolerant=True) as t:
            found = [face for iid in sorted(iids) for face in t.identity_face_ids(iid)]
            damage.add(t.damaged)
        return np.unique(np.asarray(found, np.int64))

    def batch(after: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        with read(tolerant=True) as t:
            face_ids, iids = t.face_owners_after(after, limit)
            damage.add(t.damaged)
        release()
        return np.asarray(face_ids, np.int64), np.asarray(iids, np.int64)

    return owners, faces_of, batch
