"""Faces going into the catalog sealed, and their embeddings and crops coming out.

An embedding, and the aligned crop it was computed from (kept unless the
collection says `keep_crops` off), are stored only encrypted with the data key
of their subject (the identity, or the face itself while it is not enrolled),
bound to their face id, so shredding that key is what makes a forgotten face
unrecoverable. Their rows name the owner and key slot, so a rebuild reads
embeddings alone, in key order with one cursor, without decoding a face record.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from facebank.errors import DataCorruption, InvalidArgument
from facebank.index.catalog_txn import CatalogTxn
from facebank.index.embedding_codec import pack, unpack, unpack_rows
from facebank.index.keyring import DataKey, Keyring, KeyShredded, crop_aad, embedding_aad, face_owner, identity_owner
from facebank.index.records import CollectionRecord, FaceRecord

log = logging.getLogger(__name__)
UNPACK_BLOCK = 4096   # plaintexts held before they are unpacked together (about 24 MB with their planes)


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
    crop: bytes = b""   # the aligned face the embedding was computed from, encoded (JPEG)


@dataclass(frozen=True)
class StoredFace:
    face: FaceRecord
    already: bool   # the same image was stored for this subject before


def put_sealed_face(w, coll: CollectionRecord, face: NewFace, iid: int, key: DataKey, face_id: int = 0) -> FaceRecord:
    """Write the face's record, its embedding sealed with `key` (iid 0: not enrolled),
    and its vector into the collection's live index, in write `w` (a WriteTxn)."""
    vector = np.asarray(face.embedding, dtype=np.float32)
    if vector.shape != (coll.dim,) or not np.isfinite(vector).all():
        raise InvalidArgument(f"an embedding of shape {vector.shape} cannot go into collection {coll.name!r} ({coll.dim}-d, finite)")
    face_id = face_id or w.next_id("face")
    rec = FaceRecord(
        face_id, coll.id, iid, [float(x) for x in face.box], [[float(a), float(b)] for a, b in face.landmarks],
        float(face.detection_score), face.quality, face.image_sha256, face.source_ref, face.model_id, now_ms(), key.slot,
    )
    w.put_face(rec)
    seal_embedding(w, face_id, iid, key, vector)
    if face.crop and coll.keep_crops:
        seal_crop(w, face_id, iid, key, face.crop)
    w.index_add(coll.id, rec.segment, face_id, vector)
    return rec


def seal_embedding(t: CatalogTxn, face_id: int, iid: int, key: DataKey, vector: np.ndarray) -> None:
    t.put_embedding(face_id, iid, key.slot, key.seal(pack(vector), embedding_aad(face_id)))


def seal_staged(t: CatalogTxn, face_id: int, iid: int, key: DataKey, vector: np.ndarray) -> None:
    t.put_staged(face_id, iid, key.slot, key.seal(pack(vector), embedding_aad(face_id)))


def open_staged(keyring: Keyring, t: CatalogTxn, face_id: int) -> np.ndarray | None:
    row = t.get_staged(face_id)
    if row is None:
        return None
    iid, slot, sealed = row
    return unpack(keyring.open(slot, owner_tag(iid, face_id)).open(sealed, embedding_aad(face_id)))


def seal_crop(t: CatalogTxn, face_id: int, iid: int, key: DataKey, crop: bytes) -> None:
    t.put_crop(face_id, iid, key.slot, key.seal(crop, crop_aad(face_id)))


def open_crop(keyring: Keyring, t: CatalogTxn, face_id: int) -> bytes | None:
    """The face's encoded crop (None if none was kept); KeyShredded once its key is gone."""
    row = t.get_crop(face_id)
    if row is None:
        return None
    iid, slot, sealed = row
    return keyring.open(slot, owner_tag(iid, face_id)).open(sealed, crop_aad(face_id))


def owner_tag(iid: int, face_id: int) -> bytes:
    return identity_owner(iid) if iid else face_owner(face_id)


def open_embedding(keyring: Keyring, t: CatalogTxn, face_id: int) -> np.ndarray | None:
    """The face's embedding, read-only (None if it has none); KeyShredded once its key is gone."""
    row = t.get_embedding(face_id)
    if row is None:
        return None
    iid, slot, sealed = row
    return unpack(keyring.open(slot, owner_tag(iid, face_id)).open(sealed, embedding_aad(face_id)))


def open_vectors(keyring: Keyring, t: CatalogTxn, face_ids, dim: int = 0, damaged: list | None = None,
                 table: str = "embeddings") -> tuple[np.ndarray, np.ndarray]:
    """(ids, embeddings) of the faces that can still be read, ascending, in one pass.

    A face whose key is already shredded belongs to a forget in progress (its erase
    commits next, or is finished by recovery at start): left out, never an error for
    the reader. One whose seal fails is damaged: left out and named in `damaged`
    (a rebuild must not stop the server for one bad record). `table="staged_embeddings"`
    reads a migration's new vectors the same way. Plaintexts are unpacked UNPACK_BLOCK at a time."""
    wanted = np.unique(np.asarray(face_ids, np.int64))
    ids = np.empty(len(wanted), np.int64)
    out: np.ndarray | None = None   # allocated once the dimension is known (given, or the first block's)
    n = 0
    found: list[int] = []
    plains: list[bytes] = []
    keys: dict[int, DataKey | None] = {}

    def unpack_block() -> None:
        nonlocal out, n
        read, vectors, problems = unpack_rows(plains, dim or (out.shape[1] if out is not None else 0))
        for at, why in problems:
            _report(damaged, table, found[at], why)
        if out is None:
            out = np.empty((len(wanted), vectors.shape[1]), np.float32)
        out[n:n + len(vectors)] = vectors
        ids[n:n + len(vectors)] = np.asarray(found, np.int64)[read]
        n += len(vectors)
        found.clear()
        plains.clear()

    for fid, iid, slot, sealed in t.iter_embeddings(wanted.tolist(), table):
        key = keys.get(slot, False)
        if key is False:
            try:
                key = keys[slot] = keyring.open(slot, owner_tag(iid, fid))
            except KeyShredded:
                key = keys[slot] = None
            except DataCorruption:
                key = keys[slot] = None
                _report(damaged, table, fid, f"key slot {slot} failed its check")
        if key is None:
            continue
        try:
            plains.append(key.open(sealed, embedding_aad(fid)))
        except DataCorruption:
            _report(damaged, table, fid, "sealed embedding failed its authentication")
            continue
        found.append(fid)
        if len(plains) == UNPACK_BLOCK:
            unpack_block()
    if plains:
        unpack_block()
    return ids[:n], out[:n] if out is not None else np.zeros((0, dim), np.float32)


def _report(damaged: list | None, table: str, face_id: int, why: str) -> None:
    log.error("catalog record %s/%d is damaged (%s); it is left out. Run `facebank check`", table, face_id, why)
    if damaged is not None:
        damaged.append((table, face_id.to_bytes(8, "big")))
