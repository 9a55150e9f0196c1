"""Live vector indexes, kept as derived state of the catalog.

Each collection has two segments: `enrolled` (what 1:N search looks at) and
`ingested` (faces waiting to be clustered or named). A `Segment` is a vector
index plus the catalog sequence number it reflects. At start a segment is
loaded from its snapshot and the newer catalog changes are replayed; without a
usable snapshot it is rebuilt from the catalog's sealed embeddings.

Only the unit of work changes a loaded segment (unit_of_work.py): it applies
committed changes in order, so a segment never reflects change n+1 without
change n. Rebuilds (IVF growth, retraining after a forget, HNSW tombstones)
are built here from the catalog without blocking anyone, and swapped in by
the unit of work after replaying whatever was applied meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from facebank.errors import DataCorruption, NotFound
from facebank.index.durable import private_dir
from facebank.index.faults import delay_point
from facebank.index.records import SEGMENTS, IndexSettings
from facebank.index.rwlock import RWLock
from facebank.index.snapshot import read_snapshot, stage_snapshot
from facebank.index.factory import IndexFactory
from facebank.index.ivf_retrain import can_move, move_onto
from facebank.index.vector_source import VectorSource
from facebank.index.vectors import FAISS_READERS, IVF_FAMILIES, TARGET_RECALL, IvfIndex, SearchParams, VectorIndex

log = logging.getLogger(__name__)

SNAPSHOT_EVERY_CHANGES = 1000
SNAPSHOT_EVERY_SECONDS = 60.0   # per million vectors: a snapshot at 10M faces writes 20 GB
SNAPSHOT_SHARE = 20             # or once the changes reach 1/20 of the index: replaying them costs about what writing it does
EXACT_FILTER_SHARE = 50    # a metadata filter holding at most 1/50 of the faces (or 1,000) is scored exactly
REBUILD_TRIES = 3          # a rebuild trains again at most this often for forgets that arrived during its training


def exact_filter(allowed: int, total: int) -> bool:
    """Score a filter's faces exactly, or search the approximate index with it as a selector?
    A small filter gets exact results (its faces may all sit in lists the query would not
    visit); a large one is searched like an unfiltered query, at the calibrated nprobe,
    skipping the faces outside it: the lists a query visits hold enough of them."""
    return allowed <= max(1000, total // EXACT_FILTER_SHARE)


@dataclass
class Segment:
    cid: int
    name: str
    dim: int
    settings: IndexSettings
    index: VectorIndex
    applied_seq: int = 0
    generation: int = 0
    snapshot_seq: int = 0
    retrain_pending: bool = False
    changes_since_snapshot: int = 0
    last_snapshot: float = field(default_factory=time.monotonic)
    lock: RWLock = field(default_factory=RWLock)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        with self.lock.read():
            n = len(self.index)
            if n == 0 or k == 0:
                return np.zeros((len(queries), k), np.float32), np.full((len(queries), k), -1, np.int64)
            if allowed is not None and (self.index.family == "flat" or exact_filter(len(allowed), n)):
                return self.index.search_subset(queries, k, allowed)
            params = SearchParams(nprobe=self.settings.nprobe, ef_search=self.settings.ef_search, allowed=allowed)
            return self.index.search(queries, min(k, n), params)

    def apply(self, seq: int, add_ids: np.ndarray, add_vectors: np.ndarray, remove_ids: np.ndarray) -> int:
        """Apply one committed change; returns how many vectors were removed."""
        with self.lock.write():
            removed = 0
            if len(remove_ids):
                if would_retrain(self.index, remove_ids):
                    self.retrain_pending = True
                removed = self.index.remove(remove_ids)
                if self.index.needs_rebuild:
                    self.retrain_pending = True
            if len(add_ids):
                self.index.add(add_ids, add_vectors)
            self.applied_seq = max(self.applied_seq, seq)
            self.generation += 1
            self.changes_since_snapshot += 1
            return removed

class SegmentManager:
    """Owns every live segment; loads, snapshots and rebuilds them."""

    def __init__(
        self,
        snapshot_dir: Path,
        *,
        read_source: Callable[[int, str], tuple[int, VectorSource]],
        fetch_change_vectors: Callable[[list[int]], tuple[np.ndarray, np.ndarray]],
        removed_since: Callable[[int, int, str], np.ndarray],
        snapshot_keys,
        factory: IndexFactory | None = None,
    ) -> None:
        """read_source(cid, segment) -> (seq, VectorSource): the segment's face ids at one
        consistent read of the catalog, their vectors fetched from it by id.
        fetch_change_vectors(face_ids) -> (ids, vectors) of those still present.
        removed_since(seq, cid, segment) -> face ids the catalog's changes after `seq` removed from it.
        snapshot_keys: object with new_key(cid, seg), open_key(cid, seg, slot), commit(cid, seg, key, seq), current(cid, seg)."""
        self.snapshot_dir = private_dir(snapshot_dir)
        self._read_source = read_source
        self._fetch_change_vectors = fetch_change_vectors
        self._removed_since = removed_since
        self._keys = snapshot_keys
        self.factory = factory or IndexFactory("cpu")
        self._segments: dict[tuple[int, str], Segment] = {}
        self._snapshotting = threading.Lock()  # one snapshot write at a time (the worker, a strict forget, shutdown)

    # -- access ----------------------------------------------------------------------

    def get(self, cid: int, name: str) -> Segment:
        try:
            return self._segments[(cid, name)]
        except KeyError:
            raise NotFound(f"collection {cid} has no loaded {name} index") from None

    def find(self, cid: int, name: str) -> Segment | None:
        return self._segments.get((cid, name))

    def all(self) -> list[Segment]:
        return list(self._segments.values())

    def places(self) -> list[tuple[int, str]]:
        """(collection id, segment) of every live segment: a loop that rebuilds looks each one
        up as it comes, so a replaced segment (its whole index) is freed when it is swapped out."""
        return list(self._segments)

    def for_collection(self, cid: int) -> list[Segment]:
        return [s for (c, _), s in self._segments.items() if c == cid]

    def drop(self, cid: int) -> None:
        for name in SEGMENTS:
            segment = self._segments.pop((cid, name), None)
            self.snapshot_path(cid, name).unlink(missing_ok=True)
            if segment is not None:
                segment.index.release()

    # -- loading -----------------------------------------------------------------------

    def load(self, cid: int, dim: int, settings: IndexSettings, changes: list[tuple[int, dict]]) -> None:
        """Load both segments of a collection: snapshot + replay, else rebuild."""
        for name in SEGMENTS:
            segment = self._load_snapshot(cid, name, dim, settings)
            if segment is None:
                segment = self._build(cid, name, dim, settings, current=self._keys.family(cid, name))
            else:
                self.replay(segment, [c for c in changes if c[0] > segment.applied_seq and c[1]["c"] == cid and c[1]["s"] == name])
                segment.index.after_replay()
            self._segments[(cid, name)] = segment

    def _load_snapshot(self, cid: int, name: str, dim: int, settings: IndexSettings) -> Segment | None:
        path = self.snapshot_path(cid, name)
        current = self._keys.current(cid, name)
        if current is None or not path.exists():
            return None
        try:
            key = self._keys.open_key(cid, name, current["slot"])
            header, arrays = read_snapshot(path, key, FAISS_READERS)  # FAISS indexes built from the stream
            if header.get("seq") != current["seq"] or header.get("key_slot") != current["slot"] or header.get("dim") != dim:
                raise DataCorruption("snapshot does not match the catalog's record of it")
            index = self.factory.restore(header["kind"], dim, header.get("info", {}), arrays)
        except (DataCorruption, NotFound, ValueError, KeyError, RuntimeError) as err:
            log.warning("snapshot of collection %d/%s unusable (%s); rebuilding from the catalog", cid, name, err)
            return None
        return Segment(
            cid, name, dim, settings, index,
            applied_seq=header["seq"], generation=header.get("generation", 0), snapshot_seq=header["seq"],
            retrain_pending=bool(header.get("retrain_pending", False)) or index.needs_rebuild,
        )

    def replay(self, segment: Segment, changes: list[tuple[int, dict]]) -> None:
        """Apply changes read back from the catalog's change log (vectors from the catalog)."""
        for seq, change in changes:
            ids, vectors = self._fetch_change_vectors(change["add"]) if change["add"] else (np.zeros(0, np.int64), np.zeros((0, segment.dim), np.float32))
            segment.apply(seq, ids, vectors, np.asarray(change["remove"], np.int64))

    def _build(self, cid: int, name: str, dim: int, settings: IndexSettings, generation: int = 0,
               like: VectorIndex | None = None, current: str | None = None) -> Segment:
        seq, source = self._read_source(cid, name)
        return self.build_from(cid, name, dim, settings, source, seq, generation, like, current)

    def build_from(self, cid: int, name: str, dim: int, settings: IndexSettings, source: VectorSource, seq: int,
                   generation: int = 0, like: VectorIndex | None = None, current: str | None = None) -> Segment:
        """A segment over the source's faces, searched by no one until it replaces a live one.
        `current`: the family the segment had (its snapshot's, when a start has none to read),
        so that a collection near a size line keeps its kind (family_for's hysteresis)."""
        family = self.factory.family_for(settings.kind, len(source), current)
        index = self.factory.build(family, dim, source, nprobe=settings.nprobe, ef_search=settings.ef_search, like=like,
                                   place=(cid, name))
        return Segment(cid, name, dim, settings, index, applied_seq=seq, generation=generation + 1, changes_since_snapshot=1)

    # -- rebuild and snapshot ------------------------------------------------------------

    def wants_rebuild(self, segment: Segment) -> str | None:
        """Why this segment should be rebuilt now, if it should."""
        index = segment.index
        n, family = len(index), index.family
        if segment.retrain_pending:
            return "retrain"
        wanted = self.factory.family_for(segment.settings.kind, n, family)
        if wanted != family:
            return f"{family}->{wanted}"
        if _resize_due(index):
            return "ivf-resize"
        return None

    def build_fresh(self, segment: Segment, reading=nullcontext) -> Segment:
        """A new segment for `segment` built from the catalog, searched by no one yet
        (the unit of work swaps it in).

        A retrain (after a forget) keeps the IVF's lists and at least its nprobe:
        it is there to take the forgotten faces out of the centroids, and must not
        change how everyone else is searched. The size rule has steps at powers of
        two (one face fewer can halve the lists), and a fresh calibration can land
        on another nprobe by sampling noise alone. Lists change on resize only: when
        the collection has drifted 4x above or 8x below the size they were chosen for."""
        index = segment.index
        keep = index.family in IVF_FAMILIES and not _resize_due(index) and \
            self.factory.family_for(segment.settings.kind, len(index), index.family) == index.family
        with reading():  # `reading` is held while the catalog's ids are read, not while the index is built
            seq, source = self._read_source(segment.cid, segment.name)
        delay_point("rebuild:build")
        removed = self._removed_since(seq, segment.cid, segment.name)
        for attempt in range(1, REBUILD_TRIES + 1):
            # Forgets committed since the read coalesce into this build: their faces are left
            # out before training, or (when they came during it) it trains again without them.
            source = source.without(removed)
            fresh = self.build_from(segment.cid, segment.name, segment.dim, segment.settings, source, seq, segment.generation,
                                    like=index if keep else None)
            delay_point("rebuild:trained")
            removed = self._removed_since(seq, segment.cid, segment.name)
            if attempt == REBUILD_TRIES or not would_retrain(fresh.index, removed):
                return fresh
            log.info("faces forgotten during the rebuild of collection %d/%s trained it: training again without them", segment.cid,
                     segment.name)
            fresh.index.release()
        raise AssertionError("unreachable")

    def moves_in_place(self, segment: Segment) -> bool:
        """A rebuild on this CPU into an IVF, of an IVF (a retrain, new lists for a collection that
        grew or shrank, float vectors to 8-bit codes) or of an exact index (a collection past
        exact search's size): its faces move into the new index a piece at a time (ivf_retrain.py,
        flat_move.py), never held twice. Not back from 8-bit codes to vectors: those come from
        the catalog."""
        index = segment.index
        if not can_move(index):
            return False
        wanted = self.factory.family_for(segment.settings.kind, len(index), index.family)
        if index.family == "flat":
            return wanted in IVF_FAMILIES
        return wanted == index.family or (index.family, wanted) == ("ivf", "ivf_sq8")

    def rebuild_in_place(self, segment: Segment, reading=nullcontext, stop: Callable[[], bool] = lambda: False) -> bool:
        """Train new centroids for `segment`'s IVF from the catalog (forgets that come meanwhile
        coalescing into it, as in build_fresh, whose rules for the lists and nprobe it keeps) and
        move its faces onto them while it serves. False: stopped, or the segment dropped or
        replaced, midway (the next start does it again)."""
        index = segment.index
        family = self.factory.family_for(segment.settings.kind, len(index), index.family)
        keep = family == index.family and not _resize_due(index)
        with reading():
            seq, source = self._read_source(segment.cid, segment.name)
        delay_point("rebuild:build")
        removed = self._removed_since(seq, segment.cid, segment.name)
        for attempt in range(1, REBUILD_TRIES + 1):
            source = source.without(removed)
            fresh, calibration = IvfIndex.trained_empty(segment.dim, source, nprobe=segment.settings.nprobe,
                                                        like=index if keep else None, family=family)
            delay_point("rebuild:trained")
            removed = self._removed_since(seq, segment.cid, segment.name)
            if attempt == REBUILD_TRIES or not would_retrain(fresh, removed):
                break
            log.info("faces forgotten during the rebuild of collection %d/%s trained it: training again without them", segment.cid,
                     segment.name)
        return move_onto(segment, fresh, calibration, source.vectors_of, target_recall=TARGET_RECALL, keeps=keep, stop=stop,
                         current=lambda: self._segments.get((segment.cid, segment.name)) is segment)

    def replace(self, old: Segment, fresh: Segment) -> None:
        """Swap `fresh` in for `old` (the unit of work calls this, with index writes held off)."""
        with old.lock.write():
            fresh.generation = old.generation + 1
            # A removal replayed from the tail may have hit the new training sample.
            fresh.retrain_pending = fresh.retrain_pending or fresh.index.needs_rebuild
            fresh.applied_seq = max(fresh.applied_seq, old.applied_seq)
            if self._segments.get((old.cid, old.name)) is old:
                self._segments[(old.cid, old.name)] = fresh
        if fresh.index is not old.index:
            old.index.release()

    def snapshot(self, segment: Segment, hold_writes, stop: Callable[[], bool] = lambda: False) -> bool:
        """Write a new snapshot under a fresh key, then shred the previous key.

        `hold_writes` (the unit of work's `applying`) keeps index writers out while
        the index is serialised into the file; searches go on (both only read it).
        `stop()` turning true leaves it (SnapshotStopped), the previous one in place."""
        with self._snapshotting:
            return self._snapshot(segment, hold_writes, stop)

    def _snapshot(self, segment: Segment, hold_writes, stop: Callable[[], bool]) -> bool:
        if getattr(segment.index, "moving", False):  # a retrain moving it (ivf_retrain.py): the snapshot before it stays
            return False
        key = self._keys.new_key(segment.cid, segment.name)
        staged = None
        try:
            with hold_writes():  # the index streams into the file: held for that, not for the fsync
                info, arrays = segment.index.state()
                header = {
                    "kind": segment.index.stored_kind,
                    "dim": segment.dim,
                    "seq": segment.applied_seq,
                    "generation": segment.generation,
                    "retrain_pending": segment.retrain_pending,
                    "info": info,
                }
                seq = segment.applied_seq
                staged = stage_snapshot(self.snapshot_path(segment.cid, segment.name), key, header, arrays, stop)
                del arrays
            staged.commit()
        except BaseException:
            if staged is not None:
                staged.discard()
            self._keys.discard(key)
            raise
        if not self._keys.commit(segment.cid, segment.name, key, seq, segment.index.family):
            # A forget (or a drop) came after `seq`: this file may hold what it removed.
            self.snapshot_path(segment.cid, segment.name).unlink(missing_ok=True)
            return False
        segment.snapshot_seq = seq
        segment.changes_since_snapshot = 0
        segment.last_snapshot = time.monotonic()
        return True

    def due_for_snapshot(self, segment: Segment) -> bool:
        """A snapshot's cost grows with the index (written whole), a start's replay with
        the changes since the last one: both bounds scale with the index's size."""
        if segment.changes_since_snapshot == 0:
            return False
        waited = time.monotonic() - segment.last_snapshot
        return self.due_at_shutdown(segment) or waited >= SNAPSHOT_EVERY_SECONDS * max(1.0, len(segment.index) / 1e6)

    def due_at_shutdown(self, segment: Segment) -> bool:
        """Whether a stopping server writes this segment's snapshot: not for a few changes
        since the last one (the next start replays them), which would hold the exit past
        its grace at millions of faces; always when there is none (a start would rebuild)."""
        if segment.changes_since_snapshot == 0:
            return False
        worth = max(SNAPSHOT_EVERY_CHANGES, len(segment.index) // SNAPSHOT_SHARE)
        return segment.snapshot_seq == 0 or segment.changes_since_snapshot >= worth

    def snapshot_path(self, cid: int, name: str) -> Path:
        return self.snapshot_dir / f"{cid}.{name}.snap"


def _resize_due(index: VectorIndex) -> bool:
    """An IVF whose collection drifted 4x above or 8x below the size its lists were chosen for."""
    trained = getattr(index, "trained_n", 0)
    return index.family in IVF_FAMILIES and (len(index) > 4 * trained or 8 * len(index) < trained)


def would_retrain(index: VectorIndex, removed: np.ndarray) -> bool:
    """Would removing these faces leave `index` wanting a retrain? (Segment.apply's rule, and
    a rebuild's, for forgets that came while it trained.)"""
    if not len(removed):
        return False
    trained = index.training_ids
    if len(trained) and np.isin(removed, trained).any():
        return True
    return index.family == "hnsw" and bool(np.isin(removed, index.ids()).any())  # a removal leaves a tombstone

