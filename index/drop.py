"""Dropping a collection: crypto-shred everything in it, then erase it.

The collection disappears from the catalog in the first unit of work (its
name is free again at once); its data keys are shredded next, and its records
are erased in bounded transactions. A `dropping:<id>` marker lets a restart
finish a drop that a crash interrupted. The receipt states what was observed:
how many records and keys went, and that no row of the collection remains.
"""

from __future__ import annotations

from facebank.index.catalog_tables import u32
from facebank.index.records import INGESTED, SEGMENTS
from facebank.index.sealed_faces import now_ms
from facebank.index.store import FaceStore

BATCH = 5000


def drop_collection(store: FaceStore, name: str, *, receipt: bool = True) -> dict:
    """Drop `name`; scratch collections (receipt=False) leave no receipt in the forget chain."""
    with store.forget_lock:
        with store.write() as w:
            coll = store.collection(name, w.t)
            w.delete_collection(coll)
            w.put_meta(f"dropping:{coll.id}", {"name": coll.name})
            w.on_commit.append(lambda: store.segments.drop(coll.id))
        counts, remaining = finish_drop(store, coll.id)
    if receipt:
        store.audit.append({
            "kind": "drop", "time_ms": now_ms(), "collection": name, "subject_hash": store.subject_hash(name, "*"),
            "intent": 0, "removed": counts, "index_removal_pending": False, "generation_before": 0, "generation_after": 0,
            "derived_clean": True, "snapshot_rewritten": True,
            "verification": {"method": "catalog-scan", "probes": 0, "face_ids": 0, "returned": 0, "in_index": remaining,
                             "max_score": 0.0, "threshold": 0.0, "passed": remaining == 0},
            "note": "collection dropped: every identity and face in it was crypto-shredded; "
                    "verification: rows of the collection left in the catalog after the erase",
        })
    return counts


def finish_drop(store: FaceStore, cid: int) -> tuple[dict, int]:
    """Shred and erase whatever is left of collection `cid`. Idempotent.
    Returns (counts, rows of the collection still in the catalog afterwards)."""
    counts = {"identities": 0, "faces": 0, "data_keys": 0}
    with store.read(tolerant=True) as t:
        slots = [r.key_slot for _, r in t.iter_identities(cid)]
        counts["identities"] = len(slots)
        slots += [f.key_slot for f in (t.get_face(fid) for fid in t.segment_face_ids(cid, INGESTED)) if f is not None]
        slots += [current["slot"] for seg in SEGMENTS if (current := t.get_meta(f"snapshot:{cid}:{seg}"))]
    with store.write() as w:
        counts["data_keys"] = w.shred_now(slots)
    for seg in SEGMENTS:
        store.segments.snapshot_path(cid, seg).unlink(missing_ok=True)
    while True:
        with store.write() as w:
            done = 0
            for seg in SEGMENTS:
                for fid in w.segment_face_ids(cid, seg, BATCH):
                    face = w.get_face(fid)
                    if face is not None:
                        w.delete_face(face)
                        counts["faces"] += 1
                        done += 1
                    else:  # its record was damaged or quarantined: its other rows go anyway
                        done += w.delete_prefix("segment_faces", u32(cid) + (b"e" if seg != INGESTED else b"i") + fid.to_bytes(8, "big"), 1)
                        for table in ("embeddings", "crops", "staged_embeddings", "face_owner"):
                            w.delete_prefix(table, fid.to_bytes(8, "big"), 1)
            for _, rec in list(w.iter_identities(cid))[:BATCH]:
                w.delete_identity(rec)
                w.delete_slot_owner(rec.key_slot)
                done += 1
            for cluster in list(w.iter_clusters(cid))[:BATCH]:
                w.delete_cluster(cid, cluster.cluster_id)
                done += 1
            done += w.delete_prefix("images", u32(cid), BATCH)
            done += w.delete_prefix("unclustered", u32(cid), BATCH)
            if done == 0:
                for slot in slots:
                    w.delete_slot_owner(slot)
                for seg in SEGMENTS:
                    w.delete_meta(f"snapshot:{cid}:{seg}")
                    w.delete_meta(f"index_family:{cid}:{seg}")
                w.delete_meta(f"dropping:{cid}")
                remaining = sum(w.counted(table, u32(cid)) for table in ("identities", "clusters")) + \
                    sum(w.count_segment(cid, seg) for seg in SEGMENTS)
                return counts, remaining
