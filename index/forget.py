"""Forget: unlearning-style deletion of an identity, and its crash recovery.

The steps, each of which survives a SIGKILL (a restart finishes the forget
from its intent record, so an identity never comes back):

1. read the identity's embeddings into memory only, as probes for step 6;
2. write an intent: which data keys and face ids go (no biometric data);
3. shred the identity's data key and the collection's snapshot keys, so every
   other copy (LMDB free pages, old snapshot files, backups) is unreadable;
4. delete every record and remove the vectors from the live index, before
   answering;
5. derived state: snapshots are rewritten without it, and structures trained
   on its vectors (IVF centroids, an HNSW graph) retrained, in the background
   or, with `strict`, before answering;
6. verify: its own embeddings, searched against the collection, match nothing
   above the collection's threshold;
7. append the hash-chained receipt to the audit log, then drop the intent.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import numpy as np

from facebank.errors import NotFound
from facebank.index.catalog_txn import CatalogTxn
from facebank.index.records import ENROLLED, INGESTED, SEGMENTS, ForgetIntent
from facebank.index.sealed_faces import now_ms, open_vectors
from facebank.index.store import FaceStore

log = logging.getLogger(__name__)

CRASH_ENV = "FACEBANK_CRASH_AT"
_forget_lock = threading.Lock()


def crash_point(name: str) -> None:
    """Fault injection for the crash tests: SIGKILL this process at a named step."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def forget_identity(store: FaceStore, collection: str, external_id: str, *, strict: bool = False) -> dict:
    """Forget one identity; returns its receipt (already in the audit log)."""
    with _forget_lock:  # two forgets of one identity: the second finds nothing
        coll = store.collection(collection)
        with store.catalog.read() as t:
            rec = t.get_identity(coll.id, external_id)
            if rec is None:
                raise NotFound(f"identity {external_id!r} does not exist in collection {collection!r} (already forgotten?)")
            face_ids = t.identity_face_ids(rec.iid)
            _, probes = open_vectors(store.keyring, t, face_ids)
        enrolled = store.segments.get(coll.id, ENROLLED)
        generation_before = enrolled.generation
        intent = ForgetIntent(rec.iid, coll.id, store.keyring.subject_hash(coll.name, external_id), [], face_ids)

        with store.commit_lock:
            with store.catalog.write() as t:
                intent.key_slots = [rec.key_slot] + _snapshot_slots(t, coll.id)
                t.put_intent(intent)
            crash_point("forget:after-intent")
            store.keyring.shred(intent.key_slots)
            crash_point("forget:after-shred")
            counts, seqs = _erase(store, intent)
            crash_point("forget:after-erase")
            counts["index_vectors"] = store.apply_to_index(coll.id, ENROLLED, seqs[ENROLLED], [], face_ids)
            store.apply_to_index(coll.id, INGESTED, seqs[INGESTED], [], face_ids)
            for segment in store.segments.for_collection(coll.id):
                segment.snapshot_seq = 0  # its snapshot is gone: write a new one soon
        crash_point("forget:after-index")

        if strict:
            store.maintenance.clean_now(coll.id)
        else:
            store.maintenance.wake()
        segments = store.segments.for_collection(coll.id)
        receipt = {
            "time_ms": now_ms(),
            "collection": coll.name,
            "subject_hash": intent.subject_hash,
            "intent": rec.iid,
            "removed": counts,
            "generation_before": generation_before,
            "generation_after": store.segments.get(coll.id, ENROLLED).generation,
            "derived_clean": not any(s.retrain_pending for s in segments),
            "snapshot_rewritten": all(s.changes_since_snapshot == 0 for s in segments),
            "verification": _verify(store, coll.name, coll.threshold, probes),
            "note": "",
        }
        receipt = store.audit.append(receipt)
        crash_point("forget:after-receipt")
        with store.catalog.write() as t:
            t.delete_intent(rec.iid)
    store.maintenance.forgot()
    return receipt


def _snapshot_slots(t: CatalogTxn, cid: int) -> list[int]:
    slots = []
    for name in SEGMENTS:
        current = t.get_meta(f"snapshot:{cid}:{name}")
        if current:
            slots.append(current["slot"])
    return slots


def _erase(store: FaceStore, intent: ForgetIntent) -> tuple[dict, dict]:
    """Delete what is left of the identity's records. Idempotent (used by recovery)."""
    counts = {"identities": 0, "faces": 0, "embeddings": 0, "data_keys": len(intent.key_slots), "cluster_memberships": 0, "clusters": 0, "snapshots": 0}
    with store.catalog.write() as t:
        for fid in intent.face_ids:
            face = t.get_face(fid)
            if face is None:
                continue
            counts["faces"] += 1
            counts["embeddings"] += t.get_embedding(fid) is not None
            counts["cluster_memberships"] += bool(face.cluster_id)
            t.delete_face(face)
            remaining = [f for f in t.get_image_faces(face.collection_id, face.image_sha256, face.iid) or [] if f != fid]
            t.put_image_faces(face.collection_id, face.image_sha256, face.iid, remaining)
        identity = t.get_identity_by_iid(intent.iid)
        if identity is not None:
            t.delete_identity(identity)
            t.delete_slot_owner(identity.key_slot)
            counts["identities"] = 1
        for cluster_id in t.identity_cluster_ids(intent.iid):
            t.delete_cluster(intent.collection_id, cluster_id)
            counts["clusters"] += 1
        for name in SEGMENTS:
            current = t.get_meta(f"snapshot:{intent.collection_id}:{name}")
            if current:
                t.delete_slot_owner(current["slot"])
                t.delete_meta(f"snapshot:{intent.collection_id}:{name}")
                counts["snapshots"] += 1
        seqs = {ENROLLED: t.append_change(intent.collection_id, ENROLLED, remove=intent.face_ids)}
        seqs[INGESTED] = t.append_change(intent.collection_id, INGESTED, remove=intent.face_ids)
        for name in SEGMENTS:  # a snapshot older than this may hold the identity: refused
            t.put_meta(f"forget_seq:{intent.collection_id}:{name}", seqs[name])
    for name in SEGMENTS:  # unreadable already (key shredded); now gone too
        store.segments.snapshot_path(intent.collection_id, name).unlink(missing_ok=True)
    return counts, seqs


def _verify(store: FaceStore, collection: str, threshold: float, probes: np.ndarray) -> dict:
    if len(probes) == 0:
        return {"probes": 0, "max_score": 0.0, "threshold": threshold, "passed": False}
    hits = store.search(collection, probes, top_k=1)
    best = max((h[0].score for h in hits if h), default=-1.0)
    return {"probes": int(len(probes)), "max_score": round(float(best), 6), "threshold": threshold, "passed": bool(best < threshold)}


def recover_interrupted_forgets(store: FaceStore) -> int:
    """Finish every forget a crash interrupted (called at start, before indexes load)."""
    with store.catalog.read() as t:
        intents = t.iter_intents()
    for intent in intents:
        log.warning("finishing a forget interrupted by a restart (subject %s)", intent.subject_hash[:12])
        store.keyring.shred(intent.key_slots)
        counts, _ = _erase(store, intent)
        if not any(r.get("intent") == intent.iid and r.get("subject_hash") == intent.subject_hash for r in store.audit.read()):
            with store.catalog.read() as t:
                coll = t.get_collection_by_id(intent.collection_id)
            store.audit.append({
                "time_ms": now_ms(),
                "collection": coll.name if coll else "",
                "subject_hash": intent.subject_hash,
                "intent": intent.iid,
                "removed": counts,
                "generation_before": 0,
                "generation_after": 0,
                "derived_clean": True,   # this start rebuilds every index of the collection from the catalog
                "snapshot_rewritten": False,
                "verification": {"probes": 0, "max_score": 0.0, "threshold": coll.threshold if coll else 0.0, "passed": False},
                "note": "finished at restart after an interruption; data keys shredded, records erased, indexes rebuilt from the catalog; no probes were kept across the restart",
            })
        with store.catalog.write() as t:
            t.delete_intent(intent.iid)
    return len(intents)
