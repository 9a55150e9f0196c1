"""Background upkeep of derived state: rebuilds, snapshots, change-log trimming
and the compaction policy.

One worker thread does all of it, so two rebuilds or two snapshot writes of a
segment never overlap; a strict forget asks the same worker lock to clean its
collection before it answers.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facebank.index.store import FaceStore

log = logging.getLogger(__name__)

COMPACT_AFTER_FORGET_S = 300.0   # compact at most this long after the first uncompacted forget
TICK_S = 1.0


class Maintenance:
    def __init__(self, store: "FaceStore", *, compact_after_forget_s: float = COMPACT_AFTER_FORGET_S) -> None:
        self.store = store
        self.compact_after_forget_s = compact_after_forget_s
        self.work_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first_uncompacted_forget: float | None = None
        self._trimmed = 0
        self.last_error: str = ""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="facebank-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def wake(self) -> None:
        self._wake.set()

    def forgot(self) -> None:
        if self._first_uncompacted_forget is None:
            self._first_uncompacted_forget = time.monotonic()
        self._wake.set()

    @property
    def pending_retrains(self) -> int:
        return sum(1 for s in self.store.segments.all() if s.retrain_pending)

    def clean_now(self, cid: int | None = None) -> None:
        """Rebuild what must be rebuilt and snapshot what changed, now (strict forget, compact)."""
        with self.work_lock:
            for segment in self.store.segments.all():
                if cid is not None and segment.cid != cid:
                    continue
                if self.store.segments.wants_rebuild(segment):
                    segment = self._rebuild(segment)
                if segment.changes_since_snapshot:
                    self.store.segments.snapshot(segment)
            self._trim()

    def compact(self) -> tuple[int, int]:
        """Clean every collection, then rewrite the catalog without free pages."""
        self.clean_now()
        with self.work_lock:
            before, after = self.store.catalog.compact()
            self._first_uncompacted_forget = None
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
            except Exception as err:  # keep serving; the next tick tries again
                self.last_error = f"{type(err).__name__}: {err}"
                log.exception("background maintenance failed")
                time.sleep(TICK_S)

    def _tick(self) -> None:
        with self.work_lock:
            for segment in self.store.segments.all():
                if self._stop.is_set():
                    return
                if self.store.segments.wants_rebuild(segment):
                    segment = self._rebuild(segment)
                if self.store.segments.due_for_snapshot(segment) or (segment.changes_since_snapshot and segment.snapshot_seq == 0):
                    self.store.segments.snapshot(segment)
            self._trim()
        due = self._first_uncompacted_forget
        if due is not None and time.monotonic() - due >= self.compact_after_forget_s:
            log.info("compacting the catalog (forget policy)")
            self.compact()

    def _rebuild(self, segment):
        reason = self.store.segments.wants_rebuild(segment)
        started = time.monotonic()
        fresh = self.store.segments.rebuild(segment, self.store.commit_lock, self._changes_after)
        log.info(
            "rebuilt collection %d/%s (%s): %s index of %d vectors in %.1f s",
            segment.cid, segment.name, reason, fresh.index.kind, len(fresh.index), time.monotonic() - started,
        )
        return fresh

    def _changes_after(self, seq: int) -> list:
        with self.store.catalog.read() as t:
            return list(t.iter_changes(seq))

    def _trim(self) -> None:
        """Drop the change log up to what every snapshot already holds."""
        segments = self.store.segments.all()
        if not segments:
            return
        upto = min(s.snapshot_seq for s in segments)
        if upto > self._trimmed:
            with self.store.catalog.write() as t:
                t.trim_changes(upto)
            self._trimmed = upto
