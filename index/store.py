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

from facebank.errors import AlreadyExists, FailedPrecondition, NotFound, Reason, Unavailable
from facebank.index.audit import AuditLog, ReceiptSigner
from facebank.index.catalog import DEFAULT_MAP_SIZE
from facebank.index.catalog_txn import CatalogTxn, metadata_pair
from facebank.index.damage import DamageReport
from facebank.index.factory import IndexFactory
from facebank.index.identity_search import Hit, IdentityMatches, SearchParts, search_identities
from facebank.index.key_binding import open_bound
from facebank.index.records import (
    ENROLLED,
    ApiKeyRecord,
    INGESTED,
    CollectionRecord,
    IdentityRecord,
    IndexSettings,
)
from facebank.index.sealed_faces import now_ms, open_vectors
from facebank.index.segments import Segment, SegmentManager
from facebank.index.snapshot_keys import SnapshotKeys
from facebank.index.unit_of_work import UnitOfWork
from facebank.index.vector_source import SourceChanged, VectorSource, listed_ids
from facebank.index.face_owners import FaceOwners, OwnerLoader, catalog_readers
from facebank.index.views import IdentityCache, MetadataView, listen

log = logging.getLogger(__name__)


class FaceStore:
    def __init__(self, data_dir: Path, *, keys_dir: Path | None = None, map_size: int = DEFAULT_MAP_SIZE, device: str = "cpu",
                 vectors: str | None = None) -> None:
        """vectors: where the vector indexes live: faiss (in this process), milvus://HOST:PORT or milvus-lite:PATH.db;
        None: where this data directory already keeps them (faiss for a new one)."""
        self.data_dir = Path(data_dir)
        self.keys_dir = Path(keys_dir) if keys_dir else self.data_dir / "keys"
        opened = open_bound(self.data_dir, self.keys_dir, map_size=map_size)
        self.catalog, self.keyring, self._keys_lock = opened.catalog, opened.keyring, opened.keys_lock
        try:
            self._open(device, vectors)
        except BaseException:  # leave nothing locked behind a failed start
            self._release()
            raise

    def _open(self, device: str, vectors: str | None) -> None:
        self.vectors = self._choose_vectors(vectors)
        self.audit = AuditLog(self.data_dir / "audit", ReceiptSigner.load_or_create(self.keys_dir))
        self.damage = DamageReport()
        self.owners, self.identities, self.metadata = FaceOwners(), IdentityCache(), MetadataView()
        self._collections: dict[str, CollectionRecord] = {}
        self._collections_generation = 0
        self._last_used: dict[str, float] = {}      # collection -> when a call last named it (scratch leases)
        self.catalog.listeners.append(listen(self.owners, self.identities, self.metadata))
        self.catalog.listeners.append(self._collections_changed)
        self.segments = SegmentManager(
            self.data_dir / "indexes",
            read_source=self._segment_source,
            fetch_change_vectors=self.vectors_of,
            removed_since=self._removed_since,
            snapshot_keys=SnapshotKeys(self.keyring, self.read, self.write),
            factory=IndexFactory(device),
        )
        self.uow = UnitOfWork(self.catalog, self.keyring, self.segments, dims=self._dim)
        self.forget_lock = threading.Lock()          # one forget (or drop) at a time
        self._job_locks: dict[int, threading.Lock] = {}
        self._job_locks_guard = threading.Lock()
        self._upgrade_derived()
        with self.read(tolerant=True) as t:
            self.metadata.load(t.iter_metadata_index())
            self.damage.add(t.damaged)
        self.catalog.release_pages()   # read once (see catalog_readers)
        read_owners, read_faces_of, read_batch = catalog_readers(self.read, self.damage, self.catalog.release_pages)
        self.owners.begin_loading(read_owners, read_faces_of)   # filled after the start (face_owners.py)
        self._owner_loader = OwnerLoader(self.owners, read_batch)

    def _choose_vectors(self, vectors: str | None) -> str:
        """Where this store's vectors live. A data directory keeps them where they were
        first put: another --vectors is refused before anything changes (a forget made
        while the vectors lived elsewhere would not reach the old place). Milvus itself
        is reached only when the indexes load, so offline tools (`facebank keys --data`)
        work while it is down."""
        from facebank.index.milvus_vectors import canonical

        vectors = canonical(vectors) if vectors else None
        with self.read() as t:
            recorded, binding = t.get_meta("vectors"), t.get_meta("binding") or {}
        if vectors is not None and recorded is not None and recorded != vectors:
            raise FailedPrecondition(f"{self.data_dir} keeps its vectors in {recorded}; start with --vectors {recorded}")
        self.milvus_prefix = "fb" + binding.get("catalog_id", "0" * 12)[:12]  # its Milvus collections' names start so
        return vectors or recorded or "faiss"

    def _upgrade_derived(self) -> None:
        from facebank.index.catalog_tables import DERIVED_VERSION

        with self.read() as t:
            current = t.get_meta("derived_version")
        if current != DERIVED_VERSION:
            with self.write() as w:
                w.rebuild_derived()
                w.put_meta("derived_version", DERIVED_VERSION)

    def start_owner_map(self) -> None:
        """Fill the face owner map in the background (a start does this once its indexes serve)."""
        self._owner_loader.start()

    def load_indexes(self) -> None:
        """Load every collection's live indexes: snapshot + replay, else rebuild (after recovery).
        Changes recovery queued meet no loaded index and are dropped: the replay of the
        change log brings them in, in order."""
        self.uow.drain()
        with self.read() as t:
            collections = t.list_collections()
            changes = list(t.iter_changes(0))
        if self.vectors != "faiss" and self.segments.factory.milvus is None:
            from facebank.index.milvus_vectors import MilvusTarget

            from facebank.index.milvus_publish import wire

            self.segments.factory.milvus = MilvusTarget(self.vectors, prefix=self.milvus_prefix)
            wire(self)
        with self.write() as w:
            if w.get_meta("vectors") is None:  # from now on this data directory keeps its vectors there
                w.put_meta("vectors", self.vectors)
        for rec in collections:
            self.segments.load(rec.id, rec.dim, rec.index_settings, changes)
        if self.segments.factory.milvus is not None:
            from facebank.index.milvus_publish import publish

            self.segments.factory.milvus.drop_unused({s.index.name for s in self.segments.all()})
            publish(self)  # search nodes learn the collections and keys from it

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
                          scratch_lease_s: int = 0, keep_crops: bool = True) -> CollectionRecord:
        rec = None
        try:
            with self.write() as w:
                if w.get_collection(name) is not None:
                    raise AlreadyExists(f"collection {name!r} already exists")
                rec = CollectionRecord(w.next_id("collection"), name, model_id, dim, float(threshold), now_ms(), vars(settings).copy(),
                                       scratch_lease_s=int(scratch_lease_s), keep_crops=bool(keep_crops))
                w.put_collection(rec)
                self.segments.load(rec.id, dim, settings, [])  # empty, and there before any reader can see the collection
        except BaseException:
            if rec is not None:
                self.segments.drop(rec.id)
            raise
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

    def update_collection(self, name: str, threshold: float | None, settings: IndexSettings | None,
                          keep_crops: bool | None = None) -> CollectionRecord:
        with self.write() as w:
            rec = self.collection(name, w.t)
            if keep_crops is not None and keep_crops != rec.keep_crops:
                if not keep_crops:
                    raise FailedPrecondition(
                        f"collection {name!r} keeps crops; turning that off would leave the crops it holds, so it is refused: "
                        "create a collection with keep_crops off for templates only", reason=Reason.BAD_OPTION)
                rec.keep_crops = True
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

    def vectors_of(self, face_ids, dim: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Decrypted embeddings of the faces that still exist: (ids ascending, vectors).
        A damaged row is left out and named, as a rebuild does: a start replaying the
        change log must not fail on one bad record."""
        with self.read(tolerant=True) as t:
            return self.open_vectors(t, face_ids, dim)

    def open_vectors(self, t: CatalogTxn, face_ids, dim: int = 0) -> tuple[np.ndarray, np.ndarray]:
        damaged: list = []
        out = open_vectors(self.keyring, t, face_ids, dim, damaged)
        self.damage.add(damaged)
        return out

    def _segment_source(self, cid: int, segment: str) -> tuple[int, VectorSource]:
        """The segment's faces at one read of the catalog; their vectors read by id, a chunk at a time."""
        with self.read(tolerant=True) as t:
            coll = t.get_collection_by_id(cid)
            seq, ids = t.last_seq(), listed_ids(t.iter_segment_face_ids(cid, segment), lambda: self.catalog.release_pages(in_txn=True))
        model, dim = (coll.model_id, coll.dim) if coll else ("", 0)

        def fetch(wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with self.read(tolerant=True) as t:
                now = t.get_collection_by_id(cid)
                if now is None or (now.model_id, now.dim) != (model, dim):  # not damage: other vectors now
                    raise SourceChanged(f"collection {cid} was dropped or moved to another model during a rebuild")
                chunk = self.open_vectors(t, wanted, dim)
            self.catalog.release_pages()   # read once: not left resident after the rebuild (resident_pages.py)
            return chunk

        return seq, VectorSource(ids, dim, fetch)

    def _removed_since(self, seq: int, cid: int, segment: str) -> np.ndarray:
        with self.read(tolerant=True) as t:
            return np.asarray([face for _, change in t.iter_changes(seq) if change["c"] == cid and change["s"] == segment
                               for face in change["remove"]], np.int64)

    # -- search -------------------------------------------------------------------------

    def search(self, collection: str, queries: np.ndarray, top_k: int, metadata_filter: dict[str, str] | None = None,
               min_score: float = -1.0) -> IdentityMatches:
        """The best `top_k` identities per query (an identity scores its best face),
        none scoring below min_score; `answer[i]` is query i's list of `Hit`s."""
        coll = self.collection(collection)
        segment = self.segments.get(coll.id, ENROLLED)
        if queries.ndim == 2 and queries.shape[1] != segment.dim:  # the collection moved to another model during this call
            raise Unavailable(f"collection {collection!r} switched to model {coll.model_id!r} while this request ran; send it again")
        parts = SearchParts(segment, self.owners, self.identity_records,
                            lambda wanted: self._filter_faces(coll.id, wanted))
        return search_identities(parts, queries, top_k, metadata_filter, min_score)

    def identity_records(self, iids: set[int]) -> dict[int, IdentityRecord]:
        """Records by iid, from the cache or one lazy read; damaged ones left out and reported."""
        with self.catalog.lazy_read(tolerant=True) as t:
            found = self.identities.get_many(iids, t)
            self.damage.add(t.damaged_rows())
        return found

    def _filter_faces(self, cid: int, metadata_filter: dict[str, str]) -> np.ndarray:
        """Faces of the identities whose metadata has every key=value of the filter
        (in-memory views: nothing is read from the catalog)."""
        iids = self.metadata.iids(cid, [metadata_pair(k, v) for k, v in metadata_filter.items()])
        return self.owners.faces_of(iids)

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
            if self.segments.due_at_shutdown(segment):
                try:
                    self.segments.snapshot(segment, self.uow.applying)
                except Exception:  # the next start rebuilds from the catalog
                    log.exception("could not snapshot collection %d/%s at shutdown", segment.cid, segment.name)
        self._release()

    def _release(self) -> None:
        loader = getattr(self, "_owner_loader", None)
        if loader is not None:
            loader.stop()   # before the catalog closes under it
        segments = getattr(self, "segments", None)
        if segments is not None and segments.factory.milvus is not None:
            segments.factory.milvus.close()
        self.keyring.close()
        self.catalog.close()
        if self._keys_lock is not None:
            self._keys_lock.close()


__all__ = ["FaceStore", "Hit", "IdentityMatches"]
