"""The unit of work: the one way anything is written.

    with store.uow.write() as w:        # commit lock, then one LMDB transaction
        keys = w.allocate_keys(owners)  # durable now; shredded again if the write fails
        w.put_face(...)                 # typed catalog records (CatalogTxn)
        w.index_add(cid, segment, face_id, vector)
    # committed: the change log has it, in-memory views were told, and the live
    # index has applied it (apply="now") or will at the next drain (apply="later")

Commit and index apply are two ordered steps with two locks. Commits append
their index changes to a queue in sequence order under the commit lock; a
drain applies the queue in that order under the apply lock, so an index never
gets ahead of, or reorders, the catalog. Searches see a removal at commit,
before its drain: the face's owner becomes "gone" in the FaceOwners view and
every search drops such hits (identity_search.py), so a forget answers
without waiting for the searches inside the index to leave it.

One error policy: a change the live index cannot take is recorded
(`last_error`, the change's `error`) and its segment is marked for a rebuild
from the catalog, which is the truth; the write itself stands.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from facebank.index.catalog import Catalog
from facebank.index.catalog_txn import CatalogTxn
from facebank.index.faults import crash_point
from facebank.index.keyring import DataKey, Keyring
from facebank.index.segments import Segment, SegmentManager

log = logging.getLogger(__name__)


@dataclass
class IndexChange:
    """One committed change for one live index, waiting for (or done by) a drain."""

    seq: int
    cid: int
    segment: str
    add_ids: np.ndarray
    add_vectors: np.ndarray
    remove_ids: np.ndarray
    removed: int | None = None   # vectors the index really removed (None: not applied yet)
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class WriteTxn:
    """A write in progress: the typed catalog transaction (its methods are this
    object's) plus the steps of the write protocol that go with it."""

    def __init__(self, t: CatalogTxn, keyring: Keyring) -> None:
        self.t = t
        self._keyring = keyring
        self._allocated: list[int] = []
        self.shred_after_commit: list[int] = []
        self.on_commit: list[Callable[[], None]] = []   # run right after the commit, still in commit order
        self._edits: dict[tuple[int, str], tuple[list[int], list[np.ndarray], list[int]]] = {}
        self.changes: list[IndexChange] = []
        self._forgets: set[int] = set()

    def __getattr__(self, name: str):
        return getattr(self.t, name)

    def allocate_keys(self, owners: list[bytes]) -> list[DataKey]:
        """New data keys, durable at once and recorded as owned in this transaction;
        if the write fails they are shredded, so no key outlives its records."""
        keys = self._keyring.allocate(owners) if owners else []
        self._allocated += [k.slot for k in keys]
        for key, owner in zip(keys, owners):
            self.t.put_slot_owner(key.slot, owner)
        return keys

    def open_key(self, slot: int, owner: bytes) -> DataKey:
        return self._keyring.open(slot, owner)

    def shred_now(self, slots: list[int]) -> int:
        """Shred before the commit (a forget: its intent is already durable); returns how many."""
        return self._keyring.shred(slots)

    def refuse_older_snapshots(self, cid: int) -> None:
        """Snapshots of the collection taken before this write may hold what it removes:
        from its commit on, none older than it can be recorded (SnapshotKeys.commit)."""
        self._forgets.add(cid)

    def index_add(self, cid: int, segment: str, face_id: int, vector: np.ndarray) -> None:
        ids, vectors, _ = self._edits.setdefault((cid, segment), ([], [], []))
        ids.append(face_id)
        vectors.append(np.asarray(vector, np.float32))

    def index_remove(self, cid: int, segment: str, face_ids) -> None:
        self._edits.setdefault((cid, segment), ([], [], []))[2].extend(int(f) for f in face_ids)

    def _log_changes(self, dims: Callable[[int], int]) -> None:
        """Append this write's index edits to the change log (inside the transaction)."""
        for (cid, segment), (ids, vectors, removed) in self._edits.items():
            if not ids and not removed:
                continue
            seq = self.t.append_change(cid, segment, add=ids, remove=removed)
            dim = dims(cid)
            add = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
            self.changes.append(IndexChange(seq, cid, segment, np.asarray(ids, np.int64), add, np.asarray(removed, np.int64)))
        for change in self.changes:
            if change.cid in self._forgets:  # per segment: a snapshot older than its own removal may hold the faces
                self.t.put_meta(f"forget_at:{change.cid}:{change.segment}", change.seq)

    @property
    def index_removed(self) -> int | None:
        """Vectors the live indexes removed for this write (None while any change waits for a drain)."""
        if any(c.removed is None for c in self.changes):
            return None
        return sum(c.removed for c in self.changes)


class UnitOfWork:
    def __init__(self, catalog: Catalog, keyring: Keyring, segments: SegmentManager, dims: Callable[[int], int]) -> None:
        self.catalog = catalog
        self.keyring = keyring
        self.segments = segments
        self._dims = dims
        self._commit_lock = threading.Lock()
        self._apply_lock = threading.Lock()
        self._queue: deque[IndexChange] = deque()
        self.after_commit: list[Callable[[], None]] = []   # e.g. wake the maintenance worker
        self.last_error = ""
        self._queued = threading.Event()
        self._stopping = False
        self._applier: threading.Thread | None = None

    def start_applier(self) -> None:
        """Drain deferred changes (apply="later") in the background, as soon as they commit."""
        self._applier = threading.Thread(target=self._apply_forever, name="facebank-index-apply", daemon=True)
        self._applier.start()

    def stop_applier(self) -> None:
        self._stopping = True
        self._queued.set()
        if self._applier is not None:
            self._applier.join(timeout=60)
        self.drain()

    def _apply_forever(self) -> None:
        while not self._stopping:
            self._queued.wait()
            self._queued.clear()
            try:
                self.drain()
            except Exception:  # _apply records its own failures; never let the thread die
                log.exception("draining index changes failed")

    @contextmanager
    def write(self, *, apply: str = "now") -> Iterator[WriteTxn]:
        """apply="now": the live indexes have the change when the block ends;
        "later": they get it at the next drain (searches already exclude removed faces)."""
        with self._commit_lock:
            w: WriteTxn | None = None
            try:
                with self.catalog.write() as t:
                    w = WriteTxn(t, self.keyring)
                    yield w
                    w._log_changes(self._dims)
            except BaseException:
                if w is not None and w._allocated:
                    self.keyring.shred(w._allocated)
                raise
            self._queue.extend(w.changes)
            for hook in w.on_commit:
                hook()
        if w.changes:
            crash_point("uow:after-commit")  # the catalog has the change; no index (nor Milvus) has it yet
        if w.shred_after_commit:
            self.keyring.shred(w.shred_after_commit)
        if apply == "now" and w.changes:
            self.drain()
        elif w.changes:
            self._queued.set()
        for hook in self.after_commit:
            hook()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def drain(self) -> int:
        """Apply every queued change to the live indexes, in commit order; returns how many."""
        done = 0
        with self._apply_lock:
            while self._queue:
                change = self._queue.popleft()
                self._apply(change)
                done += 1
        return done

    def _apply(self, change: IndexChange) -> None:
        segment = None
        try:
            segment = self.segments.find(change.cid, change.segment)
            if segment is None:  # its collection was dropped meanwhile
                change.removed = 0
                return
            change.removed = segment.apply(change.seq, change.add_ids, change.add_vectors, change.remove_ids)
        except Exception as err:
            # The catalog has the change (it is the truth); this index could not take it:
            # it is rebuilt from the catalog, and the failure is recorded, not hidden.
            log.exception("could not apply change %d to collection %d/%s; rebuilding that index", change.seq, change.cid, change.segment)
            change.removed, change.error = 0, f"{type(err).__name__}: {err}"
            self.last_error = f"change {change.seq}: {change.error}"
            if segment is not None:
                segment.retrain_pending = True
        finally:
            change.done.set()

    @contextmanager
    def applying(self) -> Iterator[None]:
        """Hold off index writes (a snapshot reads an index whole; searches go on)."""
        with self._apply_lock:
            yield

    def swap(self, old: Segment, fresh: Segment, catalog_changes: Callable[[int], list[tuple[int, dict]]]) -> Segment:
        """Put a rebuilt segment in place of `old`: replay what `old` applied since
        `fresh` was read from the catalog, then swap; queued changes follow on `fresh`."""
        with self._apply_lock:
            tail = [c for c in catalog_changes(fresh.applied_seq)
                    if c[0] <= old.applied_seq and c[1]["c"] == old.cid and c[1]["s"] == old.name]
            self.segments.replay(fresh, tail)
            self.segments.replace(old, fresh)
        return fresh
