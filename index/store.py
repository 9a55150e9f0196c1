"""FaceStore: the catalog, the keyring and the live indexes, kept in step.

This is the only way the rest of facebank stores or finds faces. Every write
is one catalog transaction followed, under the same commit lock, by the
matching change to the live index, so the index never gets ahead of (or
reorders) the catalog. Embeddings go in and come out sealed (sealed_faces.py).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from facebank.errors import AlreadyExists, NotFound
from facebank.index.audit import AuditLog
from facebank.index.catalog import DEFAULT_MAP_SIZE, Catalog
from facebank.index.catalog_txn import CatalogTxn
from facebank.index.factory import IndexFactory
from facebank.index.identity_search import Hit, IdentityMatches, search_identities
from facebank.index.keyring import DataKey, Keyring, face_owner, identity_owner, load_master_key
from facebank.index.records import ENROLLED, INGESTED, CollectionRecord, FaceRecord, IdentityRecord, IndexSettings
from facebank.index.sealed_faces import NewFace, StoredFace, now_ms, open_vectors, put_sealed_face
from facebank.index.segments import SegmentManager
from facebank.index.snapshot_keys import SnapshotKeys
from facebank.index.views import FaceOwners, IdentityCache, listen

log = logging.getLogger(__name__)


class FaceStore:
    def __init__(self, data_dir: Path, *, keys_dir: Path | None = None, map_size: int = DEFAULT_MAP_SIZE, background: bool = True, device: str = "cpu") -> None:
        self.data_dir = Path(data_dir)
        self.keys_dir = Path(keys_dir) if keys_dir else self.data_dir / "keys"
        self.catalog = Catalog(self.data_dir / "catalog", map_size=map_size)
        try:
            self.keyring = Keyring(self.keys_dir, load_master_key(self.keys_dir))
        except BaseException:
            self.catalog.close()
            raise
        try:
            self._open(device, background)
        except BaseException:  # leave nothing locked behind a failed start
            self.keyring.close()
            self.catalog.close()
            raise

    def _open(self, device: str, background: bool) -> None:
        from facebank.index.forget import recover_interrupted_forgets
        from facebank.index.maintenance import Maintenance

        self.audit = AuditLog(self.data_dir / "audit")
        self.commit_lock = threading.Lock()
        self.owners, self.identities = FaceOwners(), IdentityCache()
        self._collections: dict[str, CollectionRecord] = {}
        self._collections_generation = 0
        self.catalog.listeners.append(listen(self.owners, self.identities))
        self.catalog.listeners.append(self._collections_changed)
        self.segments = SegmentManager(
            self.data_dir / "indexes",
            fetch_vectors=self._segment_vectors,
            fetch_change_vectors=self.vectors_of,
            snapshot_keys=SnapshotKeys(self),
            factory=IndexFactory(device),
        )
        recover_interrupted_forgets(self)
        self._finish_interrupted_drops()
        self._scrub_key_slots()
        with self.catalog.read() as t:
            collections = t.list_collections()
            changes = list(t.iter_changes(0))
            self.owners.load(t.iter_face_owners())
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
        """The collection's record (from memory outside a transaction: it is on every call's path)."""
        if t is None:
            cached = self._collections.get(name)
            if cached is not None:
                return cached
            generation = self._collections_generation
            with self.catalog.read() as t:
                rec = self.collection(name, t)
            if generation == self._collections_generation:  # no change since the read began
                self._collections[name] = rec
            return rec
        rec = t.get_collection(name)
        if rec is None:
            raise NotFound(f"collection {name!r} does not exist; list them with `facebank collections`")
        return rec

    def _collections_changed(self, t: CatalogTxn) -> None:
        if t.collections_changed:
            self._collections_generation += 1
            self._collections.clear()

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
        return self.enroll_many(collection, [(external_id, display_name, metadata, faces)])[0]

    def enroll_many(self, collection: str, entries: list[tuple[str, str, dict[str, str], list[NewFace]]]) -> list[tuple[IdentityRecord, list[StoredFace]]]:
        """Enroll several identities in one transaction (bulk imports): all or nothing,
        one fsync of new data keys, one change for the index."""
        new_keys: list[DataKey] = []
        with self.commit_lock:
            try:
                with self.catalog.write() as t:
                    coll = self.collection(collection, t)
                    fresh = list(dict.fromkeys(e[0] for e in entries if t.get_identity(coll.id, e[0]) is None))
                    first_iid = t.next_id("identity", len(fresh)) if fresh else 0
                    iids = {ext: first_iid + i for i, ext in enumerate(fresh)}
                    new_keys = self.keyring.allocate([identity_owner(iid) for iid in iids.values()]) if iids else []
                    new_identities = {ext: (iid, key) for (ext, iid), key in zip(iids.items(), new_keys)}
                    results, added = [], []
                    for external_id, display_name, metadata, faces in entries:
                        identity, stored = self._enroll_one(t, coll, external_id, display_name, metadata, faces, new_identities, added)
                        results.append((identity, stored))
                    seq = t.append_change(coll.id, ENROLLED, add=[fid for fid, _ in added]) if added else 0
            except BaseException:
                self.keyring.shred([k.slot for k in new_keys])
                raise
            if added:
                self.apply_to_index(coll.id, ENROLLED, seq, added, [])
        return results

    def _enroll_one(self, t: CatalogTxn, coll: CollectionRecord, external_id, display_name, metadata, faces, new_identities, added):
        """One entry of enroll_many; new_identities: external id -> (iid, data key) for those created here."""
        previous = t.get_identity(coll.id, external_id)
        if previous is None:
            iid, key = new_identities[external_id]
            t.put_slot_owner(key.slot, identity_owner(iid))
            identity = IdentityRecord(iid, coll.id, external_id, display_name or external_id, dict(metadata), key.slot, now_ms())
        else:
            identity = IdentityRecord(**vars(previous))
            identity.metadata = {**previous.metadata, **metadata}
            identity.display_name = display_name or previous.display_name
            key = self.keyring.open(previous.key_slot, identity_owner(previous.iid))
        stored = []
        for face in faces:
            existing = t.get_image_faces(coll.id, face.image_sha256, identity.iid)
            if existing:
                stored.append(StoredFace(t.get_face(existing[0]), True))
                continue
            rec = put_sealed_face(t, coll, face, identity.iid, key)
            t.put_image_faces(coll.id, face.image_sha256, identity.iid, [rec.face_id])
            stored.append(StoredFace(rec, False))
            added.append((rec.face_id, face.embedding))
        identity.face_count += sum(not s.already for s in stored)
        t.put_identity(identity, previous)
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
                        rec = put_sealed_face(t, coll, face, 0, key, face_id=first + i)
                        t.mark_unclustered(coll.id, rec.face_id, True)
                        records.append(rec)
                        added.append((rec.face_id, face.embedding))
                    t.put_image_faces(coll.id, image_sha256, 0, [r.face_id for r in records])
                    seq = t.append_change(coll.id, INGESTED, add=[fid for fid, _ in added]) if added else 0
            except BaseException:
                self.keyring.shred([k.slot for k in keys])
                raise
            if added:
                self.apply_to_index(coll.id, INGESTED, seq, added, [])
        return records, False

    def apply_to_index(self, cid: int, segment: str, seq: int, added: list[tuple[int, np.ndarray]], removed: list[int]) -> int:
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
            self.apply_to_index(coll.id, rec.segment, seq, [], [face_id])
        return rec

    def identity_vectors(self, collection: str, external_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(face ids, decrypted embeddings) of one identity."""
        with self.catalog.read() as t:
            coll = self.collection(collection, t)
            rec = t.get_identity(coll.id, external_id)
            if rec is None:
                raise NotFound(f"identity {external_id!r} does not exist in collection {collection!r}")
            return open_vectors(self.keyring, t, t.identity_face_ids(rec.iid))

    def vectors_of(self, face_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Decrypted embeddings of the faces that still exist: (ids, vectors)."""
        with self.catalog.read() as t:
            return open_vectors(self.keyring, t, face_ids)

    def _segment_vectors(self, cid: int, segment: str) -> tuple[int, np.ndarray, np.ndarray]:
        with self.catalog.read() as t:
            ids, vectors = open_vectors(self.keyring, t, t.segment_face_ids(cid, segment))
            coll = t.get_collection_by_id(cid)
            if len(ids) == 0 and coll is not None:
                vectors = np.zeros((0, coll.dim), np.float32)
            return t.last_seq(), ids, vectors

    # -- search -------------------------------------------------------------------------

    def search(self, collection: str, queries: np.ndarray, top_k: int, metadata_filter: dict[str, str] | None = None,
               min_score: float = -1.0) -> IdentityMatches:
        """The best `top_k` identities per query (an identity scores its best face),
        none scoring below min_score; `answer[i]` is query i's list of `Hit`s."""
        coll = self.collection(collection)
        return search_identities(self, coll.id, queries, top_k, metadata_filter, min_score)

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
            clusters = t.count_clusters(rec.id)
            seq = t.last_seq()
        enrolled = self.segments.get(rec.id, ENROLLED)
        segs = self.segments.for_collection(rec.id)
        return {
            "identities": identities, "faces": faces, "indexed": len(enrolled.index), "unassigned": ingested,
            "clusters": clusters, "active_index": enrolled.index.family, "index_generation": enrolled.generation,
            "catalog_seq": seq, "snapshot_seq": min((s.snapshot_seq for s in segs), default=0),
            "retrain_pending": any(s.retrain_pending for s in segs),
            "nprobe": enrolled.settings.nprobe or getattr(enrolled.index, "default_nprobe", 0),
            "calibrated_recall": getattr(enrolled.index, "calibrated_recall", 0.0),
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


__all__ = ["FaceStore", "Hit", "IdentityMatches"]
