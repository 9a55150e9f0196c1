"""Background upkeep of derived state: draining index changes, rebuilds,
snapshots, change-log trimming, the compaction a forget promised, and the
lease of scratch collections.

One worker thread does all of it, so two rebuilds or two snapshot writes of a
segment never overlap; a strict forget asks the same worker lock to clean its
collection before it answers. Every step goes through the store's public API.
The compaction due after a forget is recorded in the catalog by the forget
itself, so a restart keeps the promise.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager, nullcontext

from facebank.errors import Unavailable
from facebank.index.catalog import CompactionStopped
from facebank.index.forget import PURGE_DUE
from facebank.index.resident_pages import trim_heap
from facebank.index.sealed_faces import now_ms
from facebank.index.snapshot import SnapshotStopped
from facebank.index.store import FaceStore
from facebank.index.vector_source import SourceChanged

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """The worker met stop() at a step it must not begin."""


TICK_S = 1.0
JOIN_S = 3.0  # at shutdown, how long to wait for the worker before leaving it mid-build (see stop)
HEAP_TRIM_S = 2.0  # while writes come, the heap they freed is handed back at most this often (return_free_heap)
RESNAPSHOT_S = 15.0  # after a forget drops a snapshot, write the next one at most this often (a forget storm at 1M
                     # faces otherwise rewrites a 2 GB snapshot after every forget)


class Maintenance:
    def __init__(self, store: FaceStore) -> None:
        self.store = store
        self.work_lock = threading.Lock()
        self._catalog = threading.Lock()  # held by the worker while it reads or writes the catalog, snapshots or Milvus
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trimmed = 0
        self._commits_trimmed = 0    # the catalog's commit count at the last heap trim
        self._heap_trimmed_at = 0.0
        self.last_error: str = ""
        store.uow.after_commit.append(self._wake.set)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="facebank-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker. A rebuild can train for minutes at millions of faces: past
        JOIN_S it is abandoned (the next start redoes it), once the worker is out of
        any step that touches the catalog, a snapshot or Milvus; it never enters one again."""
        self.stopping()
        if self._thread is None:
            return
        self._thread.join(timeout=JOIN_S)
        if self._thread.is_alive():
            log.warning("leaving an index rebuild unfinished to shut down now; the next start does it again")
            self._catalog.acquire()

    def stopping(self) -> None:
        """Shutdown began: begin no new step, leave a compaction (see Catalog.compact)."""
        self._stop.set()
        self._wake.set()

    @contextmanager
    def _touching(self):
        """A worker step that touches the catalog, a snapshot or Milvus: never begun after stop()."""
        with self._catalog:
            if self._stop.is_set():
                raise _Stopped
            yield

    def wake(self) -> None:
        self._wake.set()

    @property
    def pending_retrains(self) -> int:
        return sum(1 for s in self.store.segments.all() if s.retrain_pending)

    def clean_now(self, cid: int | None = None) -> None:
        """Apply queued changes, rebuild what must be rebuilt and snapshot what changed, now
        (a strict forget, compaction)."""
        with self.work_lock:
            self.store.uow.drain()
            rebuilt = False
            for place in self.store.segments.places():
                segment = self.store.segments.find(*place)
                if segment is None or (cid is not None and segment.cid != cid):
                    continue
                if self.store.segments.wants_rebuild(segment):
                    self._snapshot_before_retrain(segment)
                    segment = self._rebuild(segment)   # the replaced index is freed with its last reference
                    rebuilt = True
                    if segment is None:
                        continue
                if segment.changes_since_snapshot:
                    self.store.segments.snapshot(segment, self.store.uow.applying)
            self._trim()
            if rebuilt:   # a replaced index's memory, back to the kernel at once (the worker trims after writes)
                self.return_free_heap(now=True)

    def return_free_heap(self, now: bool = False) -> bool:
        """Hand the heap's free pages back to the kernel (resident_pages.trim_heap) if anything
        was committed since the last time, at most once a HEAP_TRIM_S unless `now` (after a
        rebuild). Writes free their temporaries into glibc's arenas (about 9 KB a face enrolled
        into an IVF), which reuse the holes only in part: a server that loaded its faces sat
        at 1.4x the memory of one started from its snapshot. The worker calls this after each
        pass (woken by every commit, else once a TICK_S), so the last writes' are handed back
        within a few seconds of them; an idle server does not trim again. A few ms at a
        gigabyte of heap. True when it trimmed.

        The catalog pages the writes read (each table's B-tree down to where its rows go) are
        handed back with it (Catalog.release_pages; they stay in the page cache): they stayed
        mapped in the process that wrote them, 0.61 GB at 5M faces loaded against a start's
        0.13 GB."""
        seen = self.store.catalog.commits
        if not now and (seen == self._commits_trimmed or time.monotonic() - self._heap_trimmed_at < HEAP_TRIM_S):
            return False
        self._commits_trimmed, self._heap_trimmed_at = seen, time.monotonic()
        self.store.catalog.release_pages()
        return trim_heap()

    def _snapshot_before_retrain(self, segment, stop=lambda: False) -> None:
        """A forget dropped the snapshot and its faces trained this index: the retrain takes
        minutes at millions of faces. A snapshot without their vectors, marked
        retrain-pending, first: a restart meanwhile loads it (and retrains) instead of
        rebuilding everything from the catalog."""
        if segment.retrain_pending and segment.snapshot_seq == 0:
            self.store.segments.snapshot(segment, self.store.uow.applying, stop)

    def compact(self) -> tuple[int, int]:
        """Clean every collection, then rewrite the catalog without free pages. At
        shutdown the copy is left (the catalog unchanged, the compaction still due)."""
        self.clean_now()
        with self.work_lock:
            with self.store.read() as t:
                forgets_before = t.get_meta("forgets", 0)
            try:
                before, after = self.store.catalog.compact(stop=self._stop.is_set)
            except CompactionStopped:
                raise Unavailable("the server is shutting down: the compaction was left unfinished and runs again "
                                  "after the next start (nothing was changed)") from None
            with self.store.write() as w:
                if w.get_meta("forgets", 0) == forgets_before:  # no forget since the copy began
                    w.delete_meta(PURGE_DUE)
            return before, after

    # -- the worker ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._tick()
                self.last_error = ""
            except (_Stopped, SnapshotStopped):
                return
            except Exception as err:  # keep serving; the next tick tries again, and stats show it
                self.last_error = f"{type(err).__name__}: {err}"
                log.exception("background maintenance failed")
                time.sleep(TICK_S)

    def _tick(self) -> None:
        with self._touching():
            self.store.uow.drain()
        with self.work_lock:
            rebuilt = False
            for place in self.store.segments.places():
                segment = self.store.segments.find(*place)
                if segment is None:
                    continue
                if self.store.segments.wants_rebuild(segment):
                    with self._touching():
                        self._snapshot_before_retrain(segment, self._stop.is_set)
                    segment = self._rebuild(segment, self._touching, self._stop.is_set)
                    rebuilt = True
                    if segment is None:
                        continue
                lost = segment.changes_since_snapshot and segment.snapshot_seq == 0  # none (a forget dropped it)
                if self.store.segments.due_for_snapshot(segment) or (lost and time.monotonic() - segment.last_snapshot >= RESNAPSHOT_S):
                    with self._touching():
                        self.store.segments.snapshot(segment, self.store.uow.applying, self._stop.is_set)
            with self._touching():
                self._trim()
            self.return_free_heap(now=rebuilt)
        with self._touching():
            self._expire_scratch()
            if self.store.segments.factory.milvus is not None:
                from facebank.index.milvus_publish import publish

                publish(self.store)  # collections and keys, for search nodes (only when they changed)
            with self.store.read() as t:
                due = t.get_meta(PURGE_DUE)
            if due is not None and now_ms() >= due:
                log.info("compacting the catalog (promised after a forget)")
                try:
                    self.compact()
                except Unavailable:
                    if self._stop.is_set():
                        raise _Stopped from None
                    raise

    def _rebuild(self, segment, touching=nullcontext, stop=lambda: False):
        segments = self.store.segments
        reason = segments.wants_rebuild(segment)
        started = time.monotonic()
        log.info("rebuilding collection %d/%s (%s)", segment.cid, segment.name, reason)
        try:
            if segments.moves_in_place(segment):   # an IVF into an IVF: moved onto its new centroids, never held twice
                if not segments.rebuild_in_place(segment, reading=touching, stop=stop):
                    if stop():
                        raise _Stopped
                    log.info("rebuild of collection %d/%s dropped: the collection was dropped or replaced", segment.cid, segment.name)
                    return None
                fresh = segment
            else:
                fresh = segments.build_fresh(segment, reading=touching)
                with touching():
                    fresh = self.store.uow.swap(segment, fresh, self._changes_after)
        except SourceChanged as why:
            log.info("rebuild of collection %d/%s dropped: %s", segment.cid, segment.name, why)
            return None
        log.info(
            "rebuilt collection %d/%s (%s): %s index of %d vectors in %.1f s",
            segment.cid, segment.name, reason, fresh.index.kind, len(fresh.index), time.monotonic() - started,
        )
        return fresh

    def _changes_after(self, seq: int) -> list:
        with self.store.read() as t:
            return list(t.iter_changes(seq))

    def _trim(self) -> None:
        """Drop the change log up to what every snapshot already holds."""
        segments = self.store.segments.all()
        if not segments:
            return
        upto = min(s.snapshot_seq for s in segments)
        if upto > self._trimmed:
            with self.store.write() as w:
                w.trim_changes(upto)
            self._trimmed = upto

    def _expire_scratch(self) -> None:
        """Scratch collections unused for their lease are dropped (crypto-shredded)."""
        from facebank.index.drop import drop_collection

        for rec in self.store.list_collections():
            if rec.scratch_lease_s and self.store.idle_seconds(rec.name) > rec.scratch_lease_s and not self.store.job_lock(rec.id).locked():
                log.info("dropping scratch collection %r: unused for %d s", rec.name, rec.scratch_lease_s)
                drop_collection(self.store, rec.name, receipt=False)
