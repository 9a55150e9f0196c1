"""FaceStore: the catalog, the keyring and the live indexes, kept in step.

Opening one binds the catalog to its keys (key_binding.py) and loads the
in-memory views; it neither recovers interrupted work nor loads the vector
indexes: whoever starts the store does (`lifecycle.start_store`). Every write
goes through its unit of work (`store.write()`, unit_of_work.py); the
workflows above it (forget, drop, clustering, maintenance, recovery) use the
methods here and nothing under them. Embeddings go in and come out sealed
(sealed_faces.py).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from facebank.errors import AlreadyExists, InvalidArgument, NotFound, Reason
from facebank.index.audit import AuditLog, ReceiptSigner
from facebank.index.catalog import DEFAULT_MAP_SIZE
from facebank.index.catalog_txn import CatalogTxn
from facebank.index.cluster_records import refresh_cluster
from facebank.index.damage import DamageReport
from facebank.index.factory import IndexFactory
from facebank.index.identity_search import Hit, IdentityMatches, search_identities
from facebank.index.key_binding import open_bound
from facebank.index.keyring import identity_owner
from facebank.index.records import (
    ENROLLED,
    ApiKeyRecord,
    INGESTED,
    MAX_IDENTITY_METADATA_BYTES,
    MAX_IDENTITY_METADATA_KEYS,
    CollectionRecord,
    FaceRecord,
    IdentityRecord,
    IndexSettings,
)
from facebank.index.sealed_faces import NewFace, StoredFace, now_ms, open_vectors, put_sealed_face
from facebank.index.segments import Segment, SegmentManager
from facebank.index.snapshot_keys import SnapshotKeys
from facebank.index.unit_of_work import UnitOfWork, WriteTxn
from facebank.index.views import FaceOwners, IdentityCache, listen

log = logging.getLogger(__name__)


class FaceStore:
    def __init__(self, data_dir: Path, *, keys_dir: Path | None = None, map_size: int = DEFAULT_MAP_SIZE, device: str = "cpu") -> None:
        self.data_dir = Path(data_dir)
        self.keys_dir = Path(keys_dir) if keys_dir else self.data_dir / "keys"
        opened = open_bound(self.data_dir, self.keys_dir, map_size=map_size)
        self.catalog, self.keyring, self._keys_lock = opened.catalog, opened.keyring, opened.keys_lock
        try:
            self._open(device)
        except BaseException:  # leave nothing locked behind a failed start
            self._release()
            raise

    def _open(self, device: str) -> None:
        self.audit = AuditLog(self.data_dir / "audit", ReceiptSigner.load_or_create(self.keys_dir))
        self.damage = DamageReport()
        self.owners, self.identities = FaceOwners(), IdentityCache()
        self._collections: dict[str, CollectionRecord] = {}
        self._collections_generation = 0
        self._last_used: dict[str, float] = {}      # collection -> when a call last named it (scratch leases)
        self.catalog.listeners.append(listen(self.owners, self.identities))
        self.catalog.listeners.append(self._collections_changed)
        self.segments = SegmentManager(
            self.data_dir / "indexes",
            fetch_vectors=self._segment_vectors,
            fetch_change_vectors=self.vectors_of,
            snapshot_keys=SnapshotKeys(self),
            factory=IndexFactory(device),
        )
        self.uow = UnitOfWork(self.catalog, self.keyring, self.segments, dims=self._dim)
        self.forget_lock = threading.Lock()          # one forget (or drop) at a time
        self._job_locks: dict[int, threading.Lock] = {}
        self._job_locks_guard = threading.Lock()
        self._upgrade_derived()
        with self.read(tolerant=True) as t:
            self.owners.load(t.iter_face_owners())
            self.damage.add(t.damaged)

    def _upgrade_derived(self) -> None:
        from facebank.index.catalog_tables import DERIVED_VERSION

        with self.read() as t:
            current = t.get_meta("derived_version")
        if current != DERIVED_VERSION:
            with self.write() as w:
                w.rebuild_derived()
                w.put_meta("derived_version", DERIVED_VERSION)

    def load_indexes(self) -> None:
        """Load every collection's live indexes: snapshot + replay, else rebuild (after recovery)."""
        with self.read() as t:
            collections = t.list_collections()
            changes = list(t.iter_changes(0))
        for rec in collections:
            self.segments.load(rec.id, rec.dim, rec.index_settings, changes)

    # -- the public parts workflows use ---------------------------------------------------

    @contextmanager
    def read(self, *, tolerant: bool = False) -> Iterator[CatalogTxn]:
        """A consistent read of the catalog; tolerant: damaged rows are skipped and reported."""
        with self.catalog.read(tolerant=tolerant) as t:
            yield t
            if t.damaged:
                self.damage.add(t.damaged)

    def write(self, *, apply: str = "now"):
        """The unit of work (see unit_of_work.py)."""
        return self.uow.write(apply=apply)

    def job_lock(self, cid: int) -> threading.Lock:
        """One clustering pass per collection at a time."""
        with self._job_locks_guard:
            return self._job_locks.setdefault(cid, threading.Lock())

    def segment(self, cid: int, name: str = ENROLLED) -> Segment:
        return self.segments.get(cid, name)

    def segments_of(self, cid: int) -> list[Segment]:
        return self.segments.for_collection(cid)

    def subject_hash(self, *parts: str) -> str:
        return self.keyring.subject_hash(*parts)

    def _dim(self, cid: int) -> int:
        seg = self.segments.find(cid, ENROLLED)
        if seg is not None:
            return seg.dim
        with self.read() as t:
            rec = t.get_collection_by_id(cid)
        return rec.dim if rec else 0

    # -- collections -----------------------------------------------------------------

    def create_collection(self, name: str, model_id: str, dim: int, threshold: float, settings: IndexSettings, *,
                          scratch_lease_s: int = 0) -> CollectionRecord:
        with self.write() as w:
            if w.get_collection(name) is not None:
                raise AlreadyExists(f"collection {name!r} already exists")
            rec = CollectionRecord(w.next_id("collection"), name, model_id, dim, float(threshold), now_ms(), vars(settings).copy(),
                                   scratch_lease_s=int(scratch_lease_s))
            w.put_collection(rec)
            w.on_commit.append(lambda: self.segments.load(rec.id, dim, settings, []))  # before any write can reach it
        self._last_used[name] = time.monotonic()
        return rec

    def collection(self, name: str, t: CatalogTxn | None = None) -> CollectionRecord:
        """The collection's record (from memory outside a transaction: it is on every call's path)."""
        if t is None:
            self._last_used[name] = time.monotonic()
            cached = self._collections.get(name)
            if cached is not None:
                return cached
            generation = self._collections_generation
            with self.read() as t:
                rec = self.collection(name, t)
            if generation == self._collections_generation:  # no change since the read began
                self._collections[name] = rec
            return rec
        rec = t.get_collection(name)
        if rec is None:
            raise NotFound(f"collection {name!r} does not exist; list them with `facebank collections`")
        return rec

    def idle_seconds(self, name: str) -> float:
        """Seconds since a call last named this collection (since it was created, at most)."""
        return time.monotonic() - self._last_used.get(name, 0.0)

    def _collections_changed(self, t: CatalogTxn) -> None:
        if t.collections_changed:
            self._collections_generation += 1
            self._collections.clear()

    def list_collections(self) -> list[CollectionRecord]:
        with self.read() as t:
            return t.list_collections()

    def update_collection(self, name: str, threshold: float | None, settings: IndexSettings | None) -> CollectionRecord:
        with self.write() as w:
            rec = self.collection(name, w.t)
            if threshold is not None:
                rec.threshold = float(threshold)
            if settings is not None:
                rec.index = vars(settings).copy()
            w.put_collection(rec)
            w.on_commit.append(lambda: self._settings_changed(rec))
        return rec

    def _settings_changed(self, rec: CollectionRecord) -> None:
        for segment in self.segments.for_collection(rec.id):
            segment.settings = rec.index_settings

    # -- enrollment and ingestion -------------------------------------------------------------

    def enroll(self, collection: str, external_id: str, display_name: str, metadata: dict[str, str], faces: list[NewFace]) -> tuple[IdentityRecord, list[StoredFace]]:
        """Store faces for an identity (created if new), in one transaction."""
        return self.enroll_many(collection, [(external_id, display_name, metadata, faces)])[0]

    def enroll_many(self, collection: str, entries: list[tuple[str, str, dict[str, str], list[NewFace]]]) -> list[tuple[IdentityRecord, list[StoredFace]]]:
        """Enroll several identities in one transaction (bulk imports): all or nothing,
        one fsync of new data keys, one change for the index."""
        with self.write() as w:
            coll = self.collection(collection, w.t)
            fresh = list(dict.fromkeys(e[0] for e in entries if w.get_identity(coll.id, e[0]) is None))
            first_iid = w.next_id("identity", len(fresh)) if fresh else 0
            iids = [first_iid + i for i in range(len(fresh))]
            keys = w.allocate_keys([identity_owner(iid) for iid in iids])
            new_identities = {ext: (iid, key) for ext, iid, key in zip(fresh, iids, keys)}
            return [self._enroll_one(w, coll, *entry, new_identities) for entry in entries]

    def _enroll_one(self, w: WriteTxn, coll: CollectionRecord, external_id, display_name, metadata, faces, new_identities):
        """One entry of enroll_many; new_identities: external id -> (iid, data key) for those created here."""
        previous = w.get_identity(coll.id, external_id)
        if previous is None:
            iid, key = new_identities[external_id]
            identity = IdentityRecord(iid, coll.id, external_id, display_name or external_id, dict(metadata), key.slot, now_ms())
        else:
            identity = IdentityRecord(**vars(previous))
            identity.metadata = {**previous.metadata, **metadata}
            identity.display_name = display_name or previous.display_name
            key = w.open_key(previous.key_slot, identity_owner(previous.iid))
        check_metadata_size(identity)
        stored = []
        for face in faces:
            existing = w.get_image_faces(coll.id, face.image_sha256, identity.iid)
            if existing:
                stored.append(StoredFace(w.get_face(existing[0]), True))
                continue
            rec = put_sealed_face(w, coll, face, identity.iid, key)
            w.put_image_faces(coll.id, face.image_sha256, identity.iid, [rec.face_id])
            stored.append(StoredFace(rec, False))
        identity.face_count += sum(not s.already for s in stored)
        w.put_identity(identity, previous)
        return identity, stored

    def ingest(self, collection: str, image_sha256: str, faces: list[NewFace]) -> tuple[list[FaceRecord], bool]:
        """Store every face of one photo, not enrolled, each under its own data key."""
        from facebank.index.keyring import face_owner

        with self.write() as w:
            coll = self.collection(collection, w.t)
            existing = w.get_image_faces(coll.id, image_sha256, 0)
            if existing is not None:
                return [f for f in (w.get_face(fid) for fid in existing) if f is not None], True
            first = w.next_id("face", len(faces)) if faces else 0
            keys = w.allocate_keys([face_owner(first + i) for i in range(len(faces))])
            records = []
            for i, (face, key) in enumerate(zip(faces, keys)):
                rec = put_sealed_face(w, coll, face, 0, key, face_id=first + i)
                w.mark_unclustered(coll.id, rec.face_id, True)
                records.append(rec)
            w.put_image_faces(coll.id, image_sha256, 0, [r.face_id for r in records])
        return records, False

    # -- reading ---------------------------------------------------------------------

    def identity(self, collection: str, external_id: str) -> tuple[IdentityRecord, list[FaceRecord]]:
        with self.read() as t:
            coll = self.collection(collection, t)
            rec = t.get_identity(coll.id, external_id)
            if rec is None:
                raise NotFound(f"identity {external_id!r} does not exist in collection {collection!r}")
            return rec, [f for f in (t.get_face(fid) for fid in t.identity_face_ids(rec.iid)) if f is not None]

    def enrolled_faces(self, collection: str, external_id: str, shas: list[str]) -> dict[str, FaceRecord]:
        """The faces already enrolled for this identity from any of these images."""
        with self.read() as t:
            coll = self.collection(collection, t)
            rec = t.get_identity(coll.id, external_id)
            if rec is None:
                return {}
            out = {}
            for sha in set(shas):
                found = t.get_image_faces(coll.id, sha, rec.iid)
                face = t.get_face(found[0]) if found else None
                if face is not None:
                    out[sha] = face
            return out

    def ingested_faces(self, collection: str, image_sha256: str) -> list[FaceRecord] | None:
        """Faces stored by an earlier ingest of this photo, or None if it was never ingested."""
        with self.read() as t:
            coll = self.collection(collection, t)
            found = t.get_image_faces(coll.id, image_sha256, 0)
            return None if found is None else [f for f in (t.get_face(fid) for fid in found) if f is not None]

    def list_identities(self, collection: str, after: bytes, limit: int) -> list[tuple[bytes, IdentityRecord, list[FaceRecord]]]:
        """A page of identities in id order: (position for the next page, record, faces).
        Damaged records are left out and reported (`facebank check`)."""
        with self.read(tolerant=True) as t:
            coll = self.collection(collection, t)
            out = []
            for position, rec in t.iter_identities(coll.id, after):
                if len(out) == limit:
                    break
                faces = [f for f in (t.get_face(fid) for fid in t.identity_face_ids(rec.iid)) if f is not None]
                out.append((position, rec, faces))
            return out

    def update_identity(self, collection: str, external_id: str, display_name: str | None, set_metadata: dict, remove: list[str]) -> IdentityRecord:
        with self.write() as w:
            coll = self.collection(collection, w.t)
            previous = w.get_identity(coll.id, external_id)
            if previous is None:
                raise NotFound(f"identity {external_id!r} does not exist in collection {collection!r}")
            rec = IdentityRecord(**vars(previous))
            rec.metadata = {k: v for k, v in {**previous.metadata, **set_metadata}.items() if k not in remove}
            if display_name is not None:
                rec.display_name = display_name
            check_metadata_size(rec)
            w.put_identity(rec, previous)
            return rec

    def delete_face(self, collection: str, face_id: int) -> FaceRecord:
        """Remove one face (its embedding too); an identity keeps its other faces."""
        with self.write() as w:
            coll = self.collection(collection, w.t)
            rec = w.get_face(face_id)
            if rec is None or rec.collection_id != coll.id:
                raise NotFound(f"face {face_id} does not exist in collection {collection!r}")
            w.delete_face(rec)
            if rec.iid:  # an ingested photo's record stays: re-ingesting it adds nothing back
                remaining = [f for f in w.get_image_faces(coll.id, rec.image_sha256, rec.iid) or [] if f != face_id]
                w.put_image_faces(coll.id, rec.image_sha256, rec.iid, remaining)
                identity = w.get_identity_by_iid(rec.iid)
                identity.face_count -= 1
                w.put_identity(identity, identity)
            else:
                w.delete_slot_owner(rec.key_slot)
                w.shred_after_commit.append(rec.key_slot)
            if rec.cluster_id:
                refresh_cluster(w, coll.id, rec.cluster_id)
            w.index_remove(coll.id, rec.segment, [face_id])
        return rec

    def identity_vectors(self, collection: str, external_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(face ids, decrypted embeddings) of one identity."""
        with self.read() as t:
            coll = self.collection(collection, t)
            rec = t.get_identity(coll.id, external_id)
            if rec is None:
                raise NotFound(f"identity {external_id!r} does not exist in collection {collection!r}")
            return self.open_vectors(t, t.identity_face_ids(rec.iid), coll.dim)

    def vectors_of(self, face_ids, dim: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Decrypted embeddings of the faces that still exist: (ids ascending, vectors)."""
        with self.read() as t:
            return self.open_vectors(t, face_ids, dim)

    def open_vectors(self, t: CatalogTxn, face_ids, dim: int = 0) -> tuple[np.ndarray, np.ndarray]:
        damaged: list = []
        out = open_vectors(self.keyring, t, face_ids, dim, damaged)
        self.damage.add(damaged)
        return out

    def _segment_vectors(self, cid: int, segment: str) -> tuple[int, np.ndarray, np.ndarray]:
        with self.read(tolerant=True) as t:
            coll = t.get_collection_by_id(cid)
            ids, vectors = self.open_vectors(t, t.segment_face_ids(cid, segment), coll.dim if coll else 0)
            return t.last_seq(), ids, vectors

    # -- search -------------------------------------------------------------------------

    def search(self, collection: str, queries: np.ndarray, top_k: int, metadata_filter: dict[str, str] | None = None,
               min_score: float = -1.0) -> IdentityMatches:
        """The best `top_k` identities per query (an identity scores its best face),
        none scoring below min_score; `answer[i]` is query i's list of `Hit`s."""
        coll = self.collection(collection)
        return search_identities(self, coll.id, queries, top_k, metadata_filter, min_score)

    # -- API keys -----------------------------------------------------------------------

    def put_api_key(self, rec: ApiKeyRecord) -> None:
        with self.write() as w:
            w.put_api_key(rec)

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        with self.read() as t:
            return t.get_api_key(key_id)

    def api_keys(self) -> list[ApiKeyRecord]:
        with self.read() as t:
            return t.list_api_keys()

    def has_api_keys(self) -> bool:
        with self.read() as t:
            return t.count("api_keys") > 0

    def revoke_api_key(self, key_id: str) -> None:
        with self.write() as w:
            if not w.delete_api_key(key_id):
                raise NotFound(f"no API key has id {key_id!r}; list them with `facebank keys list`")

    def stats(self, rec: CollectionRecord) -> dict:
        with self.read() as t:
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
        self.uow.drain()
        for segment in self.segments.all():
            if segment.changes_since_snapshot:
                try:
                    self.segments.snapshot(segment, self.uow.applying)
                except Exception:  # the next start rebuilds from the catalog
                    log.exception("could not snapshot collection %d/%s at shutdown", segment.cid, segment.name)
        self._release()

    def _release(self) -> None:
        self.keyring.close()
        self.catalog.close()
        if self._keys_lock is not None:
            self._keys_lock.close()


def check_metadata_size(rec: IdentityRecord) -> None:
    """An identity's metadata stays bounded whatever the number of calls that grew it."""
    if len(rec.metadata) > MAX_IDENTITY_METADATA_KEYS:
        raise InvalidArgument(
            f"identity {rec.external_id!r} would have {len(rec.metadata)} metadata keys; an identity holds at most "
            f"{MAX_IDENTITY_METADATA_KEYS} (remove some with remove_metadata)", reason=Reason.BAD_METADATA,
        )
    size = sum(len(k.encode()) + len(v.encode()) for k, v in rec.metadata.items())
    if size > MAX_IDENTITY_METADATA_BYTES:
        raise InvalidArgument(
            f"identity {rec.external_id!r} would hold {size:,} bytes of metadata; the limit is {MAX_IDENTITY_METADATA_BYTES:,} "
            "bytes per identity (keys and values, UTF-8)", reason=Reason.BAD_METADATA,
        )


__all__ = ["FaceStore", "Hit", "IdentityMatches", "check_metadata_size"]
