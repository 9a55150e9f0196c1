"""FaceStore: the catalog, the keyring and the live indexes, kept in step.

This is the only way the rest of facebank stores or finds faces. Every write
is one catalog transaction followed, under the same commit lock, by the
matching change to the live index, so the index never gets ahead of (or
reorders) the catalog. Embeddings are sealed with the data key of their
subject (the identity, or the face itself while it is not enrolled).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facebank.errors import AlreadyExists, InvalidArgument, NotFound
from facebank.index.audit import AuditLog
from facebank.index.catalog import DEFAULT_MAP_SIZE, Catalog
from facebank.index.catalog_txn import CatalogTxn, u64
from facebank.index.keyring import DataKey, Keyring, load_master_key
from facebank.index.records import (
    ENROLLED,
    INGESTED,
    SEGMENTS,
    CollectionRecord,
    FaceRecord,
    IdentityRecord,
    IndexSettings,
)
from facebank.index.factory import IndexFactory
from facebank.index.segments import SegmentManager

log = logging.getLogger(__name__)


def identity_owner(iid: int) -> bytes:
    return b"identity:%d" % iid


def face_owner(face_id: int) -> bytes:
    return b"face:%d" % face_id


def snapshot_owner(cid: int, segment: str) -> bytes:
    return b"snapshot:%d:%s" % (cid, segment.encode())


def embedding_aad(face_id: int) -> bytes:
    return b"embedding:" + u64(face_id)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class NewFace:
    """A face to store: what the embedder saw, and where it came from."""

    box: list[float]
    landmarks: list[list[float]]
    detection_score: float
    quality: dict
    embedding: np.ndarray
    image_sha256: str
    source_ref: str
    model_id: str


@dataclass(frozen=True)
class StoredFace:
    face: FaceRecord
    already: bool   # the same image was stored for this subject before


@dataclass(frozen=True)
class Hit:
    identity: IdentityRecord
    score: float
    face_ids: list[int]


class FaceStore:
    def __init__(self, data_dir: Path, *, keys_dir: Path | None = None, map_size: int = DEFAULT_MAP_SIZE, background: bool = True, device: str = "cpu") -> None:
        from facebank.index.forget import recover_interrupted_forgets
        from facebank.index.maintenance import Maintenance

        self.data_dir = Path(data_dir)
        self.keys_dir = Path(keys_dir) if keys_dir else self.data_dir / "keys"
        self.catalog = Catalog(self.data_dir / "catalog", map_size=map_size)
        try:
            self.keyring = Keyring(self.keys_dir, load_master_key(self.keys_dir))
        except BaseException:
            self.catalog.close()
            raise
        self.audit = AuditLog(self.data_dir / "audit")
        self.commit_lock = threading.Lock()
        self.segments = SegmentManager(
            self.data_dir / "indexes",
            fetch_vectors=self._segment_vectors,
            fetch_change_vectors=self.vectors_of,
            snapshot_keys=_SnapshotKeys(self),
            factory=IndexFactory(device),
        )
        recover_interrupted_forgets(self)
        self._finish_interrupted_drops()
        self._scrub_key_slots()
        with self.catalog.read() as t:
            collections = t.list_collections()
            changes = list(t.iter_changes(0))
        for rec in collections:
            self.segments.load(rec.id, rec.dim, rec.index_settings, changes)
        self.maintenance = Maintenance(self)
        if background:
            self.maintenance.start()

    # -- collections -----------------------------------------------------------------

    def create_collection(self, name: str, model_id: str, dim: int, threshold: float, settings: IndexSettings) -> CollectionRecord:
        with self.commit_lock:
            with self.catalog.write() as t:
                if t.get_collection(name) is not None:
                    raise AlreadyExists(f"collection {name!r} already exists")
                rec = CollectionRecord(t.next_id("collection"), name, model_id, dim, float(threshold), now_ms(), vars(settings).copy())
                t.put_collection(rec)
            self.segments.load(rec.id, dim, settings, [])
        return rec

    def collection(self, name: str, t: CatalogTxn | None = None) -> CollectionRecord:
        if t is None:
            with self.catalog.read() as t:
                return self.collection(name, t)
        rec = t.get_collection(name)
        if rec is None:
            raise NotFound(f"collection {name!r} does not exist; list them with `facebank collections`")
        return rec

    def list_collections(self) -> list[CollectionRecord]:
        with self.catalog.read() as t:
            return t.list_collections()

    def update_collection(self, name: str, threshold: float | None, settings: IndexSettings | None) -> CollectionRecord:
        with self.commit_lock:
            with self.catalog.write() as t:
                rec = self.collection(name, t)
                if threshold is not None:
                    rec.threshold = float(threshold)
                if settings is not None:
                    rec.index = vars(settings).copy()
                t.put_collection(rec)
            for segment in self.segments.for_collection(rec.id):
                segment.settings = rec.index_settings
        self.maintenance.wake()
        return rec

    # -- enrollment and ingestion -------------------------------------------------------------

    def enroll(self, collection: str, external_id: str, display_name: str, metadata: dict[str, str], faces: list[NewFace]) -> tuple[IdentityRecord, list[StoredFace]]:
        """Store faces for an identity (created if new), in one transaction."""
        new_slot: DataKey | None = None
        with self.commit_lock:
            try:
                with self.catalog.write() as t:
                    coll = self.collection(collection, t)
                    previous = t.get_identity(coll.id, external_id)
                    if previous is None:
                        iid = t.next_id("identity")
                        new_slot = self.keyring.allocate([identity_owner(iid)])[0]
                        t.put_slot_owner(new_slot.slot, identity_owner(iid))
                        identity = IdentityRecord(iid, coll.id, external_id, display_name or external_id, dict(metadata), new_slot.slot, now_ms())
                        key = new_slot
                    else:
                        identity = IdentityRecord(**vars(previous))
                        identity.metadata = {**previous.metadata, **metadata}
                        identity.display_name = display_name or previous.display_name
                        key = self.keyring.open(previous.key_slot, identity_owner(previous.iid))
                    stored, added = [], []
                    for face in faces:
                        existing = t.get_image_faces(coll.id, face.image_sha256, identity.iid)
                        if existing:
                            stored.append(StoredFace(t.get_face(existing[0]), True))
                            continue
                        rec = self._put_new_face(t, coll, face, identity.iid, key)
                        t.put_image_faces(coll.id, face.image_sha256, identity.iid, [rec.face_id])
                        stored.append(StoredFace(rec, False))
                        added.append((rec.face_id, face.embedding))
                    identity.face_count += len(added)
                    t.put_identity(identity, previous)
                    seq = t.append_change(coll.id, ENROLLED, add=[fid for fid, _ in added]) if added else 0
            except BaseException:
                if new_slot is not None:
                    self.keyring.shred([new_slot.slot])
                raise
            if added:
                self._apply(coll.id, ENROLLED, seq, added, [])
        return identity, stored

    def ingest(self, collection: str, image_sha256: str, faces: list[NewFace]) -> tuple[list[FaceRecord], bool]:
        """Store every face of one photo, not enrolled, each under its own data key."""
        with self.commit_lock:
            keys: list[DataKey] = []
            try:
                with self.catalog.write() as t:
                    coll = self.collection(collection, t)
                    existing = t.get_image_faces(coll.id, image_sha256, 0)
                    if existing is not None:
                        return [t.get_face(fid) for fid in existing], True
                    first = t.next_id("face", len(faces)) if faces else 0
                    owners = [face_owner(first + i) for i in range(len(faces))]
                    keys = self.keyring.allocate(owners) if faces else []
                    records, added = [], []
                    for i, (face, key) in enumerate(zip(faces, keys)):
                        t.put_slot_owner(key.slot, owners[i])
                        rec = self._put_new_face(t, coll, face, 0, key, face_id=first + i)
                        t.mark_unclustered(coll.id, rec.face_id, True)
                        records.append(rec)
                        added.append((rec.face_id, face.embedding))
                    t.put_image_faces(coll.id, image_sha256, 0, [r.face_id for r in records])
                    seq = t.append_change(coll.id, INGESTED, add=[fid for fid, _ in added]) if added else 0
            except BaseException:
                self.keyring.shred([k.slot for k in keys])
                raise
            if added:
                self._apply(coll.id, INGESTED, seq, added, [])
        return records, False

    def _put_new_face(self, t: CatalogTxn, coll: CollectionRecord, face: NewFace, iid: int, key: DataKey, face_id: int = 0) -> FaceRecord:
        vector = np.asarray(face.embedding, dtype=np.float32)
        if vector.shape != (coll.dim,) or not np.isfinite(vector).all():
            raise InvalidArgument(f"an embedding of shape {vector.shape} cannot go into collection {coll.name!r} ({coll.dim}-d, finite)")
        face_id = face_id or t.next_id("face")
        rec = FaceRecord(
            face_id, coll.id, iid, [float(x) for x in face.box], [[float(a), float(b)] for a, b in face.landmarks],
            float(face.detection_score), face.quality, face.image_sha256, face.source_ref, face.model_id, now_ms(), key.slot,
        )
        t.put_face(rec)
        t.put_embedding(face_id, key.seal(np.ascontiguousarray(vector, dtype="<f4").tobytes(), embedding_aad(face_id)))
        return rec

    def _apply(self, cid: int, segment: str, seq: int, added: list[tuple[int, np.ndarray]], removed: list[int]) -> int:
        """Apply a committed change to the live index (caller holds commit_lock)."""
        seg = self.segments.get(cid, segment)
        ids = np.asarray([fid for fid, _ in added], np.int64)
        vectors = np.asarray([v for _, v in added], np.float32).reshape(len(added), seg.dim)
        try:
            count = seg.apply(seq, ids, vectors, np.asarray(removed, np.int64))
        except Exception:
            # The catalog has the change (it is the truth); the live index could not
            # take it, so rebuild that index from the catalog rather than fail the call.
            log.exception("could not apply change %d to collection %d/%s; rebuilding it", seq, cid, segment)
            seg.retrain_pending = True
            count = len(removed)
        self.maintenance.wake()
        return count

    # -- reading ---------------------------------------------------------------------

    def identity(self, collection: str, external_id: str) -> tuple[IdentityRecord, list[FaceRecord]]:
        with self.catalog.read() as t:
            coll = self.collection(collection, t)
            rec = t.get_identity(coll.id, external_id)
            if rec is None:
                raise NotFound(f"identity {external_id!r} does not exist in collection {collection!r}")
            return rec, [t.get_face(fid) for fid in t.identity_face_ids(rec.iid)]

    def enrolled_faces(self, collection: str, external_id: str, shas: list[str]) -> dict[str, FaceRecord]:
        """The faces already enrolled for this identity from any of these images."""
        with self.catalog.read() as t:
            coll = self.collection(collection, t)
            rec = t.get_identity(coll.id, external_id)
            if rec is None:
                return {}
            out = {}
            for sha in set(shas):
                found = t.get_image_faces(coll.id, sha, rec.iid)
                if found:
                    out[sha] = t.get_face(found[0])
            return out

    def ingested_faces(self, collection: str, image_sha256: str) -> list[FaceRecord] | None:
        """Faces stored by an earlier ingest of this photo, or None if it was never ingested."""
        with self.catalog.read() as t:
            coll = self.collection(collection, t)
            found = t.get_image_faces(coll.id, image_sha256, 0)
            return None if found is None else [t.get_face(f) for f in found]

    def list_identities(self, collection: str, after: str, limit: int) -> list[tuple[IdentityRecord, list[FaceRecord]]]:
        with self.catalog.read() as t:
            coll = self.collection(collection, t)
            out = []
            for rec in t.iter_identities(coll.id, after):
                if len(out) == limit:
                    break
                out.append((rec, [t.get_face(fid) for fid in t.identity_face_ids(rec.iid)]))
            return out

    def update_identity(self, collection: str, external_id: str, display_name: str | None, set_metadata: dict, remove: list[str]) -> IdentityRecord:
        with self.commit_lock, self.catalog.write() as t:
            coll = self.collection(collection, t)
            previous = t.get_identity(coll.id, external_id)
            if previous is None:
                raise NotFound(f"identity {external_id!r} does not exist in collection {collection!r}")
            rec = IdentityRecord(**vars(previous))
            rec.metadata = {k: v for k, v in {**previous.metadata, **set_metadata}.items() if k not in remove}
            if display_name is not None:
                rec.display_name = display_name
            t.put_identity(rec, previous)
            return rec

    def delete_face(self, collection: str, face_id: int) -> FaceRecord:
        """Remove one face (its embedding too); an identity keeps its other faces."""
        with self.commit_lock:
            with self.catalog.write() as t:
                coll = self.collection(collection, t)
                rec = t.get_face(face_id)
                if rec is None or rec.collection_id != coll.id:
                    raise NotFound(f"face {face_id} does not exist in collection {collection!r}")
                t.delete_face(rec)
                if rec.iid:  # an ingested photo's record stays: re-ingesting it adds nothing back
                    remaining = [f for f in t.get_image_faces(coll.id, rec.image_sha256, rec.iid) or [] if f != face_id]
                    t.put_image_faces(coll.id, rec.image_sha256, rec.iid, remaining)
                if rec.iid:
                    identity = t.get_identity_by_iid(rec.iid)
                    identity.face_count -= 1
                    t.put_identity(identity, identity)
                else:
                    t.delete_slot_owner(rec.key_slot)
                if rec.cluster_id:
                    from facebank.index.cluster_store import refresh_cluster

                    refresh_cluster(t, coll.id, rec.cluster_id)
                seq = t.append_change(coll.id, rec.segment, remove=[face_id])
            if not rec.iid:
                self.keyring.shred([rec.key_slot])
            self._apply(coll.id, rec.segment, seq, [], [face_id])
        return rec

    def identity_vectors(self, collection: str, external_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(face ids, decrypted embeddings) of one identity."""
        with self.catalog.read() as t:
            coll = self.collection(collection, t)
            rec = t.get_identity(coll.id, external_id)
            if rec is None:
                raise NotFound(f"identity {external_id!r} does not exist in collection {collection!r}")
            return self._decrypt(t, t.identity_face_ids(rec.iid))

    def vectors_of(self, face_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Decrypted embeddings of the faces that still exist: (ids, vectors)."""
        with self.catalog.read() as t:
            return self._decrypt(t, face_ids)

    def _decrypt(self, t: CatalogTxn, face_ids) -> tuple[np.ndarray, np.ndarray]:
        ids, rows = [], []
        for fid in face_ids:
            rec = t.get_face(int(fid))
            sealed = t.get_embedding(int(fid)) if rec else None
            if sealed is None:
                continue
            owner = identity_owner(rec.iid) if rec.iid else face_owner(rec.face_id)
            plain = self.keyring.open(rec.key_slot, owner).open(sealed, embedding_aad(rec.face_id))
            ids.append(rec.face_id)
            rows.append(np.frombuffer(plain, dtype="<f4"))
        dim = len(rows[0]) if rows else 0
        return np.asarray(ids, np.int64), (np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32))

    def _segment_vectors(self, cid: int, segment: str) -> tuple[int, np.ndarray, np.ndarray]:
        with self.catalog.read() as t:
            ids, vectors = self._decrypt(t, t.segment_face_ids(cid, segment))
            coll = t.get_collection_by_id(cid)
            if len(ids) == 0 and coll is not None:
                vectors = np.zeros((0, coll.dim), np.float32)
            return t.last_seq(), ids, vectors

    # -- search -------------------------------------------------------------------------

    def search(self, collection: str, queries: np.ndarray, top_k: int, metadata_filter: dict[str, str] | None = None) -> list[list[Hit]]:
        """The best `top_k` identities per query (an identity scores its best face)."""
        coll = self.collection(collection)
        segment = self.segments.get(coll.id, ENROLLED)
        allowed = self._filter_faces(coll.id, metadata_filter) if metadata_filter else None
        if allowed is not None and len(allowed) == 0:
            return [[] for _ in queries]
        k = max(16, 4 * top_k)
        while True:
            scores, labels = segment.search(queries, k, allowed)
            hits, short = self._group(scores, labels, top_k)
            if not short or k >= 1024 or k >= len(segment.index):
                return hits
            k *= 4

    def _group(self, scores: np.ndarray, labels: np.ndarray, top_k: int) -> tuple[list[list[Hit]], bool]:
        results, short = [], False
        with self.catalog.read() as t:
            owners = t.face_owners(labels.reshape(-1).tolist()) if labels.size else []
            identities: dict[int, IdentityRecord | None] = {}
            for row in range(len(labels)):
                best: dict[int, list] = {}
                for col in range(labels.shape[1]):
                    iid = owners[row * labels.shape[1] + col]
                    if labels[row, col] < 0 or iid <= 0:
                        continue
                    entry = best.setdefault(iid, [float(scores[row, col]), []])
                    entry[1].append(int(labels[row, col]))
                hits = []
                for iid, (score, faces) in sorted(best.items(), key=lambda kv: -kv[1][0])[:top_k]:
                    if iid not in identities:
                        identities[iid] = t.get_identity_by_iid(iid)
                    if identities[iid] is not None:
                        hits.append(Hit(identities[iid], score, faces))
                full = labels.shape[1] > 0 and labels[row, -1] >= 0
                short = short or (len(hits) < top_k and full)
                results.append(hits)
        return results, short

    def _filter_faces(self, cid: int, metadata_filter: dict[str, str]) -> np.ndarray:
        with self.catalog.read() as t:
            iids: set[int] | None = None
            for key, value in metadata_filter.items():
                found = t.iids_with_metadata(cid, key, value)
                iids = found if iids is None else iids & found
            face_ids = [fid for iid in sorted(iids or ()) for fid in t.identity_face_ids(iid)]
        return np.asarray(face_ids, np.int64)

    # -- maintenance ---------------------------------------------------------------------

    def _finish_interrupted_drops(self) -> None:
        from facebank.index.drop import finish_drop

        with self.catalog.read() as t:
            pending = t.meta_with_prefix("dropping:")
        for key in pending:
            finish_drop(self, int(key.split(":", 1)[1]))

    def _scrub_key_slots(self) -> None:
        """Shred keys no record owns: left by a crash between allocation and commit."""
        with self.catalog.read() as t:
            owned = t.owned_slots()
        orphans = sorted(self.keyring.used_slots() - owned)
        if orphans:
            log.info("shredding %d orphaned data keys", len(orphans))
            self.keyring.shred(orphans)

    def stats(self, rec: CollectionRecord) -> dict:
        with self.catalog.read() as t:
            identities = t.count_identities(rec.id)
            faces = t.count_segment(rec.id, ENROLLED)
            ingested = t.count_segment(rec.id, INGESTED)
            clusters = sum(1 for _ in t.iter_clusters(rec.id))
            seq = t.last_seq()
        enrolled = self.segments.get(rec.id, ENROLLED)
        segs = self.segments.for_collection(rec.id)
        return {
            "identities": identities, "faces": faces, "indexed": len(enrolled.index), "unassigned": ingested,
            "clusters": clusters, "active_index": enrolled.index.family, "index_generation": enrolled.generation,
            "catalog_seq": seq, "snapshot_seq": min((s.snapshot_seq for s in segs), default=0),
            "retrain_pending": any(s.retrain_pending for s in segs),
        }

    def close(self) -> None:
        self.maintenance.stop()
        for segment in self.segments.all():
            if segment.changes_since_snapshot:
                try:
                    self.segments.snapshot(segment)
                except Exception:  # the next start rebuilds from the catalog
                    log.exception("could not snapshot collection %d/%s at shutdown", segment.cid, segment.name)
        self.keyring.close()
        self.catalog.close()


class _SnapshotKeys:
    """Snapshot keys: one keyring slot per snapshot, rotated at every write."""

    def __init__(self, store: FaceStore) -> None:
        self.store = store

    def current(self, cid: int, segment: str) -> dict | None:
        with self.store.catalog.read() as t:
            return t.get_meta(f"snapshot:{cid}:{segment}")

    def open_key(self, cid: int, segment: str, slot: int) -> DataKey:
        return self.store.keyring.open(slot, snapshot_owner(cid, segment))

    def new_key(self, cid: int, segment: str) -> DataKey:
        return self.store.keyring.allocate([snapshot_owner(cid, segment)])[0]

    def discard(self, key: DataKey) -> None:
        self.store.keyring.shred([key.slot])

    def commit(self, cid: int, segment: str, key: DataKey, seq: int) -> bool:
        """Record the new snapshot and shred the previous key. Refused (and the new
        key shredded) if a forget happened after `seq`: that snapshot may hold it."""
        with self.store.catalog.write() as t:
            if t.get_collection_by_id(cid) is None or seq < t.get_meta(f"forget_seq:{cid}:{segment}", 0):
                stale = True
            else:
                stale = False
                previous = t.get_meta(f"snapshot:{cid}:{segment}")
                t.put_meta(f"snapshot:{cid}:{segment}", {"slot": key.slot, "seq": seq})
                t.put_slot_owner(key.slot, snapshot_owner(cid, segment))
                if previous:
                    t.delete_slot_owner(previous["slot"])
        if stale:
            self.discard(key)
            return False
        if previous:
            self.store.keyring.shred([previous["slot"]])
        return True


__all__ = ["FaceStore", "NewFace", "StoredFace", "Hit", "SEGMENTS"]
