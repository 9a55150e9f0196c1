"""Faces going into the catalog sealed, and their embeddings coming out.

An embedding is stored only encrypted with the data key of its subject (the
identity, or the face itself while it is not enrolled), bound to its face id,
so shredding that key is what makes a forgotten face unrecoverable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from facebank.errors import InvalidArgument
from facebank.index.catalog_txn import CatalogTxn
from facebank.index.keyring import DataKey, Keyring, KeyShredded, embedding_aad, face_owner, identity_owner
from facebank.index.records import CollectionRecord, FaceRecord


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


def put_sealed_face(t: CatalogTxn, coll: CollectionRecord, face: NewFace, iid: int, key: DataKey, face_id: int = 0) -> FaceRecord:
    """Write the face's record and its embedding sealed with `key` (iid 0: not enrolled)."""
    vector = np.asarray(face.embedding, dtype=np.float32)
    if vector.shape != (coll.dim,) or not np.isfinite(vector).all():
        raise InvalidArgument(f"an embedding of shape {vector.shape} cannot go into collection {coll.name!r} ({coll.dim}-d, finite)")
    face_id = face_id or t.next_id("face")
    rec = FaceRecord(
        face_id, coll.id, iid, [float(x) for x in face.box], [[float(a), float(b)] for a, b in face.landmarks],
        float(face.detection_score), face.quality, face.image_sha256, face.source_ref, face.model_id, now_ms(), key.slot,
    )
    t.put_face(rec)
    seal_embedding(t, face_id, key, vector)
    return rec


def seal_embedding(t: CatalogTxn, face_id: int, key: DataKey, vector: np.ndarray) -> None:
    t.put_embedding(face_id, key.seal(np.ascontiguousarray(vector, dtype="<f4").tobytes(), embedding_aad(face_id)))


def open_embedding(keyring: Keyring, t: CatalogTxn, face: FaceRecord) -> np.ndarray | None:
    """The face's embedding, read-only (None if it has none); KeyShredded once its key is gone."""
    sealed = t.get_embedding(face.face_id)
    if sealed is None:
        return None
    owner = identity_owner(face.iid) if face.iid else face_owner(face.face_id)
    plain = keyring.open(face.key_slot, owner).open(sealed, embedding_aad(face.face_id))
    return np.frombuffer(plain, dtype="<f4")


def open_vectors(keyring: Keyring, t: CatalogTxn, face_ids) -> tuple[np.ndarray, np.ndarray]:
    """(ids, embeddings) of the faces that can still be read. A face whose key is
    already shredded belongs to a forget in progress (its erase commits next, or
    is finished by recovery at start): it is left out, never an error for the reader."""
    ids, rows = [], []
    for fid in face_ids:
        rec = t.get_face(int(fid))
        try:
            vector = open_embedding(keyring, t, rec) if rec else None
        except KeyShredded:
            continue
        if vector is not None:
            ids.append(rec.face_id)
            rows.append(vector)
    dim = len(rows[0]) if rows else 0
    return np.asarray(ids, np.int64), (np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32))
