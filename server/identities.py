"""Identities: read, list, update, delete a face, and forget."""

from __future__ import annotations

import base64
import binascii

from facebank.index import identities
from facebank.index.face_crops import MEDIA_TYPE, face_crop, face_crops
from facebank.errors import InvalidArgument, Reason
from facebank.index.forget import forget_identity
from facebank.server import convert, validate
from facebank.server.engine import Parts
from facebank.v1 import facebank_pb2 as pb

MAX_PAGE = 1000


_TOKEN_PREFIX = b"fbp1:"


def _token(position: bytes) -> str:
    """Where the next page starts, as an opaque token."""
    return base64.urlsafe_b64encode(_TOKEN_PREFIX + position).decode()


def _after(token: str) -> bytes:
    if not token:
        return b""
    try:
        raw = base64.urlsafe_b64decode(token.encode())
    except (binascii.Error, ValueError):
        raw = b""
    if not raw.startswith(_TOKEN_PREFIX) or len(raw) == len(_TOKEN_PREFIX):
        raise InvalidArgument("page_token is not one this server issued; start again without it", reason=Reason.BAD_OPTION)
    return raw[len(_TOKEN_PREFIX):]


def fill_crops(parts: Parts, faces: list[pb.Face]) -> None:
    """Put each listed face's kept crop in its message (faces without one stay without)."""
    crops = face_crops(parts.store, [f.face_id for f in faces])
    for face in faces:
        face.crop = crops.get(face.face_id, b"")


class IdentitiesService:
    def __init__(self, parts: Parts) -> None:
        self.p = parts

    def create_identity(self, req: pb.CreateIdentityRequest) -> pb.Identity:
        coll = self.p.collection(req.collection)
        rec = identities.create_identity(self.p.store, coll.name, validate.identity_id(req.identity_id), validate.display_name(req.display_name),
                                         validate.metadata(dict(req.metadata)))
        return convert.identity_pb(rec, [])

    def get_identity(self, req: pb.IdentityRef) -> pb.Identity:
        coll = self.p.store.collection(validate.collection_name(req.collection))
        rec, faces = identities.identity(self.p.store, coll.name, validate.identity_id(req.identity_id))
        out = convert.identity_pb(rec, faces)
        if req.with_crops:
            fill_crops(self.p, list(out.faces))
        return out

    def list_identities(self, req: pb.ListIdentitiesRequest) -> pb.ListIdentitiesResponse:
        coll = self.p.store.collection(validate.collection_name(req.collection))
        size = validate.positive(req.page_size, "page_size", MAX_PAGE) or 100
        rows = identities.list_identities(self.p.store, coll.name, _after(req.page_token), size + 1)
        page, more = rows[:size], len(rows) > size
        out = pb.ListIdentitiesResponse(
            identities=[convert.identity_pb(rec, faces) for _, rec, faces in page],
            next_page_token=_token(page[-1][0]) if more else "",
        )
        if req.with_crops:
            fill_crops(self.p, [f for identity in out.identities for f in identity.faces])
        return out

    def update_identity(self, req: pb.UpdateIdentityRequest) -> pb.Identity:
        coll = self.p.store.collection(validate.collection_name(req.collection))
        external_id = validate.identity_id(req.identity_id)
        name = validate.display_name(req.display_name) if req.HasField("display_name") else None
        set_metadata = validate.metadata(dict(req.set_metadata), "set_metadata")
        remove = validate.metadata_keys(req.remove_metadata)
        rec = identities.update_identity(self.p.store, coll.name, external_id, name, set_metadata, remove)
        return convert.identity_pb(rec)

    def delete_face(self, req: pb.DeleteFaceRequest) -> pb.DeleteFaceResponse:
        coll = self.p.store.collection(validate.collection_name(req.collection))
        rec = identities.delete_face(self.p.store, coll.name, req.face_id)
        owner = identities.identity_by_iid(self.p.store, rec.iid) if rec.iid else None
        return pb.DeleteFaceResponse(face=convert.face_pb(rec, owner.external_id if owner else ""))

    def get_face_crop(self, req: pb.FaceRef) -> pb.FaceCrop:
        coll = self.p.store.collection(validate.collection_name(req.collection))
        rec, crop = face_crop(self.p.store, coll.name, req.face_id)
        owner = identities.identity_by_iid(self.p.store, rec.iid) if rec.iid else None
        return pb.FaceCrop(face=convert.face_pb(rec, owner.external_id if owner else ""), image=crop, media_type=MEDIA_TYPE)

    def forget(self, req: pb.ForgetRequest) -> pb.ForgetReceipt:
        coll = self.p.store.collection(validate.collection_name(req.collection))
        receipt = forget_identity(self.p.store, self.p.maintenance, coll.name, validate.identity_id(req.identity_id), strict=req.strict,
                                  compact_after_s=self.p.config.compact_after_forget_s)
        return convert.receipt_pb(receipt)
