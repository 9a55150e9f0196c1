"""Finishing at start what a crash interrupted, before the indexes load.

The engine runs this (not the store's constructor): forgets are finished from
their intents, drops from their markers, scratch collections are dropped (a
run that used one is over), data keys no record owns are shredded, and the
scratch folders of a killed compaction or upgrade are removed.
"""

from __future__ import annotations

import logging
import shutil

from facebank.index.catalog import scratch_dir
from facebank.index.drop import drop_collection, finish_drop
from facebank.index.forget import recover_interrupted_forgets
from facebank.index.store import FaceStore

log = logging.getLogger(__name__)


def recover(store: FaceStore) -> dict:
    """Returns what was done, by kind (for the log and the tests)."""
    done = {"forgets": recover_interrupted_forgets(store), "drops": 0, "scratch": 0, "orphan_keys": 0, "scratch_dirs": 0}
    with store.read() as t:
        pending = t.meta_with_prefix("dropping:")
    for key in pending:
        finish_drop(store, int(key.split(":", 1)[1]))
        done["drops"] += 1
    for rec in store.list_collections():
        if rec.scratch_lease_s:
            log.info("dropping scratch collection %r left by an earlier run", rec.name)
            drop_collection(store, rec.name, receipt=False)
            done["scratch"] += 1
    done["orphan_keys"] = scrub_key_slots(store)
    for leftover in (scratch_dir(store.catalog.path), store.catalog.path.with_name(store.catalog.path.name + ".upgrade")):
        if leftover.exists():
            log.info("removing %s, left by an interrupted compaction", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
            done["scratch_dirs"] += 1
    return done


def scrub_key_slots(store: FaceStore) -> int:
    """Shred keys no record owns: left by a crash between allocation and commit."""
    with store.read() as t:
        owned = t.owned_slots()
    orphans = sorted(store.keyring.used_slots() - owned)
    if orphans:
        log.info("shredding %d orphaned data keys", len(orphans))
        with store.write() as w:
            w.shred_now(orphans)
    return len(orphans)
