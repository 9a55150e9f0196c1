"""Dropping a collection: crypto-shred everything in it, then erase it.

The collection disappears from the catalog in the first transaction (its name
is free again at once); its data keys are shredded next, and its records are
erased in bounded transactions. A `dropping:<id>` marker lets a restart
finish a drop that a crash interrupted.
"""

from __future__ import annotations

from facebank.index.catalog_tables import u32
from facebank.index.forget import _forget_lock
from facebank.index.records import INGESTED, SEGMENTS
from facebank.index.sealed_faces import now_ms
from facebank.index.store import FaceStore

BATCH = 5000


def drop_collection(store: FaceStore, name: str) -> dict:
    with _forget_lock, store.commit_lock:
        with store.catalog.write() as t:
            coll = store.collection(name, t)
            t.delete_collection(coll)
            t.put_meta(f"dropping:{coll.id}", {"name": coll.name})
        counts = finish_drop(store, coll.id)
        store.segments.drop(coll.id)
    store.audit.append({
        "time_ms": now_ms(), "collection": name, "subject_hash": store.keyring.subject_hash(name, "*"),
        "intent": 0, "removed": counts, "generation_before": 0, "generation_after": 0, "derived_clean": True,
        "snapshot_rewritten": True, "verification": {"probes": 0, "max_score": 0.0, "threshold": 0.0, "passed": True},
        "note": "collection dropped: every identity and face in it was crypto-shredded",
    })
    store.maintenance.forgot()
    return counts


def finish_drop(store: FaceStore, cid: int) -> dict:
    """Shred and erase whatever is left of collection `cid`. Idempotent."""
    counts = {"identities": 0, "faces": 0, "data_keys": 0}
    with store.catalog.read() as t:
        slots = [r.key_slot for r in t.iter_identities(cid)]
        counts["identities"] = len(slots)
        ingested = t.segment_face_ids(cid, INGESTED)
        slots += [t.get_face(f).key_slot for f in ingested if t.get_face(f)]
        for seg in SEGMENTS:
            current = t.get_meta(f"snapshot:{cid}:{seg}")
            if current:
                slots.append(current["slot"])
    counts["data_keys"] = store.keyring.shred(slots)
    for seg in SEGMENTS:
        store.segments.snapshot_path(cid, seg).unlink(missing_ok=True)
    while True:
        with store.catalog.write() as t:
            done = 0
            for seg in SEGMENTS:
                for fid in t.segment_face_ids(cid, seg, BATCH):
                    face = t.get_face(fid)
                    if face is not None:
                        t.delete_face(face)
                        counts["faces"] += 1
                        done += 1
            for rec in list(t.iter_identities(cid))[:BATCH]:
                t.delete_identity(rec)
                done += 1
            for cluster in list(t.iter_clusters(cid))[:BATCH]:
                t.delete_cluster(cid, cluster.cluster_id)
                done += 1
            done += t.delete_prefix("images", u32(cid), BATCH)
            done += t.delete_prefix("unclustered", u32(cid), BATCH)
            if done == 0:
                for slot in slots:
                    t.delete_slot_owner(slot)
                for seg in SEGMENTS:
                    t.delete_meta(f"snapshot:{cid}:{seg}")
                t.delete_meta(f"dropping:{cid}")
                return counts
