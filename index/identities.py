"""Identities and their faces: enrolling, ingesting photos, reading, updating
and deleting one face, on the store's public API (every write one unit of work).

Forget (forget.py) and drop (drop.py) are the other ways faces leave."""

from __future__ import annotations

import numpy as np

from facebank.errors import AlreadyExists, InvalidArgument, NotFound, Reason
from facebank.index.cluster_records import refresh_cluster
from facebank.index.keyring import face_owner, identity_owner
from facebank.index.records import (
    MAX_IDENTITY_METADATA_BYTES,
    MAX_IDENTITY_METADATA_KEYS,
    CollectionRecord,
    FaceRecord,
    IdentityRecord,
)
from facebank.index.sealed_faces import NewFace, StoredFace, now_ms, put_sealed_face
from facebank.index.store import FaceStore
from facebank.index.unit_of_work import WriteTxn



def enroll(store: FaceStore, collection: str, external_id: str, display_name: str, metadata: dict[str, str], faces: list[NewFace]) -> tuple[IdentityRecord, list[StoredFace]]:
    """Store faces for an identity (created if new), in one transaction."""
    return enroll_many(store, collection, [(external_id, display_name, metadata, faces)])[0]

def enroll_many(store: FaceStore, collection: str, entries: list[tuple[str, str, dict[str, str], list[NewFace]]]) -> list[tuple[IdentityRecord, list[StoredFace]]]:
    """Enroll several identities in one transaction (bulk imports): all or nothing,
    one fsync of new data keys, one change for the index."""
    with store.write() as w:
        coll = store.collection(collection, w.t)
        fresh = list(dict.fromkeys(e[0] for e in entries if w.get_identity(coll.id, e[0]) is None))
        first_iid = w.next_id("identity", len(fresh)) if fresh else 0
        iids = [first_iid + i for i in range(len(fresh))]
        keys = w.allocate_keys([identity_owner(iid) for iid in iids])
        new_identities = {ext: (iid, key) for ext, iid, key in zip(fresh, iids, keys)}
        return [_enroll_one(store, w, coll, *entry, new_identities) for entry in entries]

def _enroll_one(store: FaceStore, w: WriteTxn, coll: CollectionRecord, external_id, display_name, metadata, faces, new_identities):
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

def create_identity(store: FaceStore, collection: str, external_id: str, display_name: str, metadata: dict[str, str]) -> IdentityRecord:
    """An identity with no face yet, with its data key; enrollment adds faces to it."""
    with store.write() as w:
        coll = store.collection(collection, w.t)
        if w.get_identity(coll.id, external_id) is not None:
            raise AlreadyExists(f"identity {external_id!r} already exists in collection {collection!r}")
        iid = w.next_id("identity")
        key = w.allocate_keys([identity_owner(iid)])[0]
        rec = IdentityRecord(iid, coll.id, external_id, display_name or external_id, dict(metadata), key.slot, now_ms())
        check_metadata_size(rec)
        w.put_identity(rec)
        return rec


def ingest(store: FaceStore, collection: str, image_sha256: str, faces: list[NewFace]) -> tuple[list[FaceRecord], bool]:
    """Store every face of one photo, not enrolled, each under its own data key."""
    with store.write() as w:
        coll = store.collection(collection, w.t)
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


def identity(store: FaceStore, collection: str, external_id: str) -> tuple[IdentityRecord, list[FaceRecord]]:
    with store.read() as t:
        coll = store.collection(collection, t)
        rec = t.get_identity(coll.id, external_id)
        if rec is None:
            raise NotFound(f"identity {external_id!r} does not exist in collection {collection!r}")
        return rec, [f for f in (t.get_face(fid) for fid in t.identity_face_ids(rec.iid)) if f is not None]

def enrolled_faces(store: FaceStore, collection: str, external_id: str, shas: list[str]) -> dict[str, FaceRecord]:
    """The faces already enrolled for this identity from any of these images."""
    with store.read() as t:
        coll = store.collection(collection, t)
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

def ingested_faces(store: FaceStore, collection: str, image_sha256: str) -> list[FaceRecord] | None:
    """Faces stored by an earlier ingest of this photo, or None if it was never ingested."""
    with store.read() as t:
        coll = store.collection(collection, t)
        found = t.get_image_faces(coll.id, image_sha256, 0)
        return None if found is None else [f for f in (t.get_face(fid) for fid in found) if f is not None]

def list_identities(store: FaceStore, collection: str, after: bytes, limit: int) -> list[tuple[bytes, IdentityRecord, list[FaceRecord]]]:
    """A page of identities in id order: (position for the next page, record, faces).
    Damaged records are left out and reported (`facebank check`)."""
    with store.read(tolerant=True) as t:
        coll = store.collection(collection, t)
        out = []
        for position, rec in t.iter_identities(coll.id, after):
            if len(out) == limit:
                break
            faces = [f for f in (t.get_face(fid) for fid in t.identity_face_ids(rec.iid)) if f is not None]
            out.append((position, rec, faces))
        return out

def update_identity(store: FaceStore, collection: str, external_id: str, display_name: str | None, set_metadata: dict, remove: list[str]) -> IdentityRecord:
    with store.write() as w:
        coll = store.collection(collection, w.t)
        previous = w.get_identity(coll.id, external_id)
        if previous is None:
            raise NotFound(f"identity {external_id!r} does not exist in collection {collection!r}")
        rec = IdentityRecord(**vars(previous))
        rec.metadata = {k: v for k, v in {**previous.metadata, **set_metadata}.items() if k not in remove}
        if display_name is not None:
            rec.display_name = display_name
        check_metadata_size(rec)
        w.put_identity(rec, previous)
        if store.segments.factory.milvus is not None:  # search nodes answer with the name and metadata in Milvus rows
            from facebank.index.milvus_publish import refresh_identity

            w.on_commit.append(lambda: refresh_identity(store, coll.id, rec.iid))
        return rec

def delete_face(store: FaceStore, collection: str, face_id: int) -> FaceRecord:
    """Remove one face (its embedding too); an identity keeps its other faces."""
    with store.write() as w:
        coll = store.collection(collection, w.t)
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

def identity_by_iid(store: FaceStore, iid: int) -> IdentityRecord | None:
    with store.read() as t:
        return t.get_identity_by_iid(iid)


def face_vector(store: FaceStore, collection: str, face_id: int) -> tuple[FaceRecord, np.ndarray]:
    """One stored face of the collection and its decrypted embedding."""
    with store.read() as t:
        coll = store.collection(collection, t)
        rec = t.get_face(face_id)
        if rec is None or rec.collection_id != coll.id:
            raise NotFound(f"face {face_id} does not exist in collection {collection!r}")
        ids, vectors = store.open_vectors(t, [face_id], coll.dim)
    if len(ids) == 0:
        raise NotFound(f"face {face_id} does not exist in collection {collection!r} (forgotten?)")
    return rec, vectors[0]


def identity_vectors(store: FaceStore, collection: str, external_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(face ids, decrypted embeddings) of one identity."""
    with store.read() as t:
        coll = store.collection(collection, t)
        rec = t.get_identity(coll.id, external_id)
        if rec is None:
            raise NotFound(f"identity {external_id!r} does not exist in collection {collection!r}")
        return store.open_vectors(t, t.identity_face_ids(rec.iid), coll.dim)


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
