"""Kept face crops read back: one face's (GetFaceCrop), or those of a listing.

A crop is the aligned face its embedding was computed from, kept sealed under
the same data key (sealed_faces.py), so it goes with the embedding when that
key is shredded. The review console shows them; a model migration re-embeds
from them.
"""

from __future__ import annotations

from facebank.errors import DataCorruption, FailedPrecondition, NotFound, Reason
from facebank.index.keyring import KeyShredded
from facebank.index.records import FaceRecord
from facebank.index.sealed_faces import open_crop
from facebank.index.store import FaceStore

MEDIA_TYPE = "image/jpeg"


def face_crop(store: FaceStore, collection: str, face_id: int) -> tuple[FaceRecord, bytes]:
    """(the face, its crop); NotFound for a face that is not there, FailedPrecondition
    (NO_CROP) for one stored without a crop."""
    with store.read() as t:
        coll = store.collection(collection, t)
        rec = t.get_face(face_id)
        if rec is None or rec.collection_id != coll.id:
            raise NotFound(f"face {face_id} does not exist in collection {collection!r}")
        try:
            crop = open_crop(store.keyring, t, face_id)
        except KeyShredded:
            raise NotFound(f"face {face_id} does not exist in collection {collection!r} (forgotten)") from None
    if crop is None:
        why = ("the collection was created with keep_crops off" if not coll.keep_crops
               else "it was stored before this version kept crops, or its crop was not kept")
        raise FailedPrecondition(f"face {face_id} of collection {collection!r} has no kept crop: {why}", reason=Reason.NO_CROP)
    return rec, crop


def face_crops(store: FaceStore, face_ids: list[int]) -> dict[int, bytes]:
    """The kept crops of these faces, read in one transaction; faces without one (not
    kept, forgotten meanwhile, damaged: `facebank check` names those) are left out."""
    out: dict[int, bytes] = {}
    with store.read() as t:
        for fid in face_ids:
            try:
                crop = open_crop(store.keyring, t, fid)
            except (KeyShredded, DataCorruption):
                continue
            if crop is not None:
                out[fid] = crop
    return out
