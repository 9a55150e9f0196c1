"""Crops for faces stored without one, taken again from their source photos.

A face stored before crops were kept (or while its collection had `keep_crops`
off) can still be migrated to another model once its crop is back. Its source
photo is recognised by the SHA-256 stored with the face; the photo is analysed
again by the collection's own model, and a face found there gives its crop to a
stored face only if it is that face: boxes overlapping (IoU >= MATCH_IOU) and
embeddings agreeing (cosine >= MATCH_COSINE, the same model on the same pixels
gives the same vector). A crop is never attached to someone else's face. The
crop is sealed under the face's data key, like the ones kept at enrollment, in
one unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from facebank.errors import FailedPrecondition, Reason
from facebank.index.keyring import KeyShredded
from facebank.index.records import CollectionRecord
from facebank.index.sealed_faces import open_embedding, owner_tag, seal_crop
from facebank.index.segments import SEGMENTS
from facebank.index.store import FaceStore

MATCH_IOU = 0.5
MATCH_COSINE = 0.9
CHUNK = 5_000


@dataclass(frozen=True)
class SeenFace:
    """A face found again in a source photo by the collection's model."""

    box: list[float]
    embedding: np.ndarray
    crop: bytes


@dataclass
class Filled:
    filled: list[int]
    unmatched: list[int]


def cropless_images(store: FaceStore, collection: str, chunk: int = CHUNK) -> Iterator[list[str]]:
    """The SHA-256 of every photo with a face of `collection` lacking a crop, each once, in chunks."""
    seen: set[str] = set()
    with store.read() as t:
        coll = store.collection(collection, t)
        _check_keeps_crops(coll)
        batch = []
        for segment in SEGMENTS:
            for fid in t.segment_face_ids(coll.id, segment):
                if t.get_crop(fid) is not None:
                    continue
                face = t.get_face(fid)
                if face is None or not face.image_sha256 or face.image_sha256 in seen:
                    continue
                seen.add(face.image_sha256)
                batch.append(face.image_sha256)
                if len(batch) == chunk:
                    yield batch
                    batch = []
    if batch:
        yield batch


def fill_crops(store: FaceStore, collection: str, image_sha256: str, seen: list[SeenFace]) -> Filled:
    """Give the photo's faces that lack a crop the crop of the face found there that is
    the same face; returns which were filled and which matched none."""
    out = Filled([], [])
    with store.write() as w:
        coll = store.collection(collection, w.t)
        _check_keeps_crops(coll)
        taken: set[int] = set()
        for fid in sorted(set(w.faces_of_image(coll.id, image_sha256))):
            face = w.get_face(fid)
            if face is None or face.collection_id != coll.id or w.get_crop(fid) is not None:
                continue
            try:
                key = w.open_key(face.key_slot, owner_tag(face.iid, fid))
                stored = open_embedding(store.keyring, w.t, fid)
            except KeyShredded:  # being forgotten
                continue
            match = _same_face(face.box, stored, seen, taken)
            if match is None:
                out.unmatched.append(fid)
                continue
            taken.add(match)
            seal_crop(w, fid, face.iid, key, seen[match].crop)
            out.filled.append(fid)
    return out


def _check_keeps_crops(coll: CollectionRecord) -> None:
    if not coll.keep_crops:
        raise FailedPrecondition(f"collection {coll.name!r} has keep_crops off, so it keeps no crops; turn it on first "
                                 f"(facebank collections set {coll.name} --crops)", reason=Reason.BAD_OPTION)


def _same_face(box: list[float], stored: np.ndarray | None, seen: list[SeenFace], taken: set[int]) -> int | None:
    best, best_iou = None, MATCH_IOU
    for i, candidate in enumerate(seen):
        if i in taken or not candidate.crop:
            continue
        overlap = iou(box, candidate.box)
        if overlap < best_iou:
            continue
        if stored is None or candidate.embedding.shape != stored.shape or float(candidate.embedding @ stored) < MATCH_COSINE:
            continue
        best, best_iou = i, overlap
    return best


def iou(a: list[float], b: list[float]) -> float:
    ax0, ay0, ax1, ay1 = a[:4]
    bx0, by0, bx1, by1 = b[:4]
    w = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    h = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = w * h
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0
