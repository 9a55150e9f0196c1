"""Forget: unlearning-style deletion of an identity, and its crash recovery.

The steps, each of which survives a SIGKILL (a restart finishes the forget
from its intent record, so an identity never comes back):

1. read the identity's embeddings into memory only, as probes for step 5;
2. write an intent: which data keys and face ids go (no biometric data), and
   when the catalog must be compacted at the latest (durable: a restart keeps
   the promise);
3. in one unit of work: shred the identity's data key and the collection's
   snapshot keys (every other copy, in LMDB free pages, old snapshots or
   backups, is unreadable from here on), erase every record that names the
   identity or its faces, and queue the vectors' removal from the live
   indexes. From this commit on no search answers with its faces (the answer
   filter), so the forget does not wait for the searches inside the index;
4. derived state: the vectors leave the index at the next drain, snapshots
   are rewritten, structures trained on them (IVF centroids, an HNSW graph)
   retrained, in the background or, with `strict`, before answering;
5. verify, and record only what was observed: none of its own face ids is
   returned by a search of any of the collection's indexes with its own
   embeddings (look-alikes enrolled under other ids are not a failure);
6. append the signed, hash-chained receipt, then drop the intent.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from facebank.errors import NotFound
from facebank.index.catalog_txn import CatalogTxn
from facebank.index.faults import CRASH_ENV, crash_point, delay_point  # noqa: F401  (CRASH_ENV: the tests name it from here)
from facebank.index.records import ENROLLED, INGESTED, SEGMENTS, ForgetIntent
from facebank.index.sealed_faces import now_ms
from facebank.index.store import FaceStore

log = logging.getLogger(__name__)

PURGE_DUE = "purge_due_ms"   # meta: compact the catalog by then (a forget's plaintext records sit in free pages)
COMPACT_AFTER_FORGET_S = 300.0


def forget_identity(store: FaceStore, maintenance, collection: str, external_id: str, *, strict: bool = False,
                    compact_after_s: float = COMPACT_AFTER_FORGET_S) -> dict:
    """Forget one identity; returns its receipt (already in the audit log)."""
    with store.forget_lock:  # two forgets of one identity: the second finds nothing
        coll = store.collection(collection)
        with store.read() as t:
            rec = t.get_identity(coll.id, external_id)
            if rec is None:
                raise NotFound(f"identity {external_id!r} does not exist in collection {collection!r} (already forgotten?)")
            face_ids = t.identity_face_ids(rec.iid)
            _, probes = store.open_vectors(t, face_ids, coll.dim)
        generation_before = store.segment(coll.id).generation
        intent = ForgetIntent(rec.iid, coll.id, store.subject_hash(coll.name, external_id), [], face_ids, now_ms())
        with store.write() as w:
            intent.key_slots = [rec.key_slot] + _snapshot_slots(w, coll.id)
            w.put_intent(intent)
            if w.get_meta(PURGE_DUE) is None:
                w.put_meta(PURGE_DUE, now_ms() + int(compact_after_s * 1000))
        crash_point("forget:after-intent")
        delay_point("forget:after-intent")
        # Vectors in Milvus: other processes search them without this one's answer filter,
        # so the forget answers only once Milvus itself no longer returns the faces.
        remote = any(s.index.external for s in store.segments_of(coll.id))
        counts, w = erase(store, intent, apply="now" if strict or remote else "later", compact_after_s=compact_after_s)
        crash_point("forget:after-erase")
        if strict:
            maintenance.clean_now(coll.id)
        crash_point("forget:after-index")
        segments = store.segments_of(coll.id)
        removed_now = w.index_removed
        emptied = {c.segment for c in w.changes if c.removed}
        vector_store = [p for s in segments if s.name in emptied and (p := s.index.purge())]
        receipt = {
            "kind": "forget",
            "time_ms": now_ms(),
            "collection": coll.name,
            "subject_hash": intent.subject_hash,
            "intent": rec.iid,
            "removed": {**counts, "index_vectors": removed_now or 0},
            "index_removal_pending": removed_now is None,
            "generation_before": generation_before,
            "generation_after": store.segment(coll.id).generation,
            "derived_clean": not any(_reflects(s, face_ids, pending=removed_now is None) for s in segments),
            "snapshot_rewritten": all(s.changes_since_snapshot == 0 for s in segments),
            "verification": verify_forgotten(store, coll.id, coll.threshold, np.asarray(face_ids, np.int64), probes,
                                             search=strict or remote, pending=removed_now is None),
            "note": "",
        }
        failed = [c.error for c in w.changes if c.error]
        if remote and failed:
            receipt["note"] = f"Milvus did not confirm the removal ({failed[0]}); its index is rebuilt from the catalog without these faces"
        elif vector_store:
            receipt["note"] = "Milvus: a Strong-consistency query then found none of these faces; " + "; ".join(
                f"{p['milvus_collection']}: {'flushed' if p['flushed'] else 'not flushed'}, compaction {p['compaction']}" for p in vector_store
            ) + (". Milvus removes deleted rows from storage at compaction and their old files at garbage collection; "
                 "its message log (rocksmq, Pulsar or Kafka) keeps every write until its retention expires")
        receipt = store.audit.append(receipt)
        crash_point("forget:after-receipt")
        with store.write() as w:
            w.delete_intent(rec.iid)
    return receipt


def _reflects(segment, face_ids: list[int], *, pending: bool) -> bool:
    """Does a trained structure of this segment (IVF centroids, HNSW graph) still reflect
    these faces? Read without the index's lock: from its training sample (fixed per
    index), its retrain flag (set by the apply before the forget's change counts as
    applied), and whether the removal is still queued (an HNSW graph then holds them)."""
    if segment.retrain_pending:
        return True
    if segment.index.trained_on(face_ids):
        return True
    return pending and segment.index.family == "hnsw" and len(face_ids) > 0


def _snapshot_slots(t: CatalogTxn, cid: int) -> list[int]:
    return [current["slot"] for name in SEGMENTS if (current := t.get_meta(f"snapshot:{cid}:{name}"))]


def erase(store: FaceStore, intent: ForgetIntent, *, apply: str = "later", compact_after_s: float = COMPACT_AFTER_FORGET_S):
    """Shred the intent's keys and erase what is left of the identity's records, in one
    unit of work. Idempotent (recovery runs it again). Returns (counts, the write)."""
    cid = intent.collection_id
    counts = {"identities": 0, "faces": 0, "embeddings": 0, "crops": 0, "data_keys": 0, "cluster_memberships": 0, "clusters": 0,
              "snapshots": 0, "image_records": 0}
    with store.write(apply=apply) as w:
        # The erased rows linger in free pages until a compaction: one copying now, or one
        # that ended since the intent was written, must not count this forget as compacted.
        w.put_meta("forgets", w.get_meta("forgets", 0) + 1)
        if w.get_meta(PURGE_DUE) is None:
            w.put_meta(PURGE_DUE, now_ms() + int(compact_after_s * 1000))
        counts["data_keys"] = w.shred_now(intent.key_slots)
        crash_point("forget:after-shred")
        gone = set(intent.face_ids)
        for fid in intent.face_ids:
            face = w.get_face(fid)
            if face is None:
                continue
            counts["faces"] += 1
            counts["embeddings"] += (w.get_embedding(fid) is not None) + (w.get_staged(fid) is not None)  # staged: a migration's
            counts["crops"] += w.get_crop(fid) is not None
            counts["cluster_memberships"] += bool(face.cluster_id)
            w.delete_face(face)
            counts["image_records"] += w.unlink_image_faces(cid, face.image_sha256, gone)
        identity = w.get_identity_by_iid(intent.iid)
        if identity is not None:
            w.delete_identity(identity)
            w.delete_slot_owner(identity.key_slot)
            counts["identities"] = 1
        for cluster_id in w.identity_cluster_ids(intent.iid):
            w.delete_cluster(cid, cluster_id)
            counts["clusters"] += 1
        for name in SEGMENTS:
            current = w.get_meta(f"snapshot:{cid}:{name}")
            if current:
                w.delete_slot_owner(current["slot"])
                w.delete_meta(f"snapshot:{cid}:{name}")
                counts["snapshots"] += 1
            w.index_remove(cid, name, intent.face_ids)
        w.refuse_older_snapshots(cid)
        w.on_commit.append(lambda: _drop_snapshots(store, cid))
    return counts, w


def _drop_snapshots(store: FaceStore, cid: int) -> None:
    """Their keys are shredded already (unreadable), and they are due again. The files
    go on another thread: unlinking a 2 GB snapshot is not worth a forget's latency."""
    for segment in store.segments_of(cid):
        segment.snapshot_seq = 0
    paths = [store.segments.snapshot_path(cid, name) for name in SEGMENTS]
    threading.Thread(target=lambda: [p.unlink(missing_ok=True) for p in paths], name="facebank-unlink", daemon=True).start()


def verify_forgotten(store: FaceStore, cid: int, threshold: float, face_ids: np.ndarray, probes: np.ndarray, *,
                     search: bool, pending: bool) -> dict:
    """What was observed after the forget, by one of two methods:

    own-faces (strict forgets): the identity's own embeddings searched against every
    index of the collection; `returned` counts its face ids that would reach an answer
    (must be 0), `in_index` those whose vector is still in an index (answers exclude
    them), `max_score` the best other identity (a look-alike is no failure).
    answer-filter (the others: searching would make the forget wait for the searches
    in flight): `returned` counts its face ids the answer filter every search applies
    would still let through (read from the owners view), `in_index` those whose
    removal was still queued when the receipt was written."""
    passing = int((store.owners.lookup(face_ids) >= 0).sum()) if len(face_ids) else 0
    out = {"method": "answer-filter", "probes": 0, "face_ids": int(len(face_ids)), "returned": passing,
           "in_index": int(len(face_ids)) if pending else 0, "max_score": 0.0, "threshold": threshold, "passed": passing == 0}
    if not search:
        return out
    if len(probes) == 0:
        return {**out, "method": "not-run", "passed": False}
    returned = in_index = 0
    best_other = -1.0
    for segment in store.segments_of(cid):
        k = min(len(segment.index), max(10, len(face_ids)))
        if k == 0:
            continue
        scores, labels = segment.search(probes, k)
        own = np.isin(labels, face_ids)
        owners = store.owners.lookup(labels)
        returned += int((own & (owners >= 0)).sum())
        in_index += int(np.isin(face_ids, labels).sum())  # a face still indexed is its own probe's nearest
        others = (~own) & (labels >= 0) & (owners > 0)
        if segment.name == ENROLLED and others.any():
            best_other = max(best_other, float(scores[others].max()))
    return {"method": "own-faces", "probes": int(len(probes)), "face_ids": int(len(face_ids)), "returned": returned,
            "in_index": in_index, "max_score": round(best_other, 6), "threshold": threshold, "passed": returned == 0}


def recover_interrupted_forgets(store: FaceStore) -> int:
    """Finish every forget a crash interrupted (at start, before the indexes load)."""
    with store.read() as t:
        intents = t.iter_intents()
    for intent in intents:
        log.warning("finishing a forget interrupted by a restart (subject %s)", intent.subject_hash[:12])
        counts, _ = erase(store, intent)
        if not any(r.get("intent") == intent.iid and r.get("subject_hash") == intent.subject_hash for r in store.audit.read()):
            with store.read() as t:
                coll = t.get_collection_by_id(intent.collection_id)
            store.audit.append({
                "kind": "forget",
                "time_ms": now_ms(),
                "collection": coll.name if coll else "",
                "subject_hash": intent.subject_hash,
                "intent": intent.iid,
                "removed": counts,
                "index_removal_pending": False,   # this start loads every index without them (replay or rebuild)
                "generation_before": 0,
                "generation_after": 0,
                "derived_clean": False,
                "snapshot_rewritten": False,
                "verification": {"method": "not-run", "probes": 0, "face_ids": len(intent.face_ids), "returned": 0, "in_index": 0,
                                 "max_score": 0.0, "threshold": coll.threshold if coll else 0.0, "passed": False},
                "note": "finished at restart after an interruption: data keys shredded and records erased again; "
                        "its embeddings were not kept across the restart, so no search was run to verify",
            })
        with store.write() as w:
            w.delete_intent(intent.iid)
    return len(intents)


__all__ = ["INGESTED", "crash_point", "erase", "forget_identity", "recover_interrupted_forgets", "verify_forgotten"]
