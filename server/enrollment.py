"""Enrollment: one identity from one or more photos, or a stream of them."""

from __future__ import annotations

import logging
from typing import Iterator

from facebank.index import identities
from facebank.errors import FacebankError, InternalError, InvalidArgument, Reason
from facebank.server import convert, validate
from facebank.server.engine import Parts
from facebank.server.faces import require_face, sha256_hex
from facebank.v1 import facebank_pb2 as pb

log = logging.getLogger(__name__)


def accept_low_quality(value: int) -> bool:
    if value not in (pb.QUALITY_FILTER_DEFAULT, pb.QUALITY_FILTER_NONE):
        raise InvalidArgument(f"quality_filter {value} is unknown; use DEFAULT or NONE", reason=Reason.BAD_OPTION)
    return value == pb.QUALITY_FILTER_NONE


class EnrollmentService:
    def __init__(self, parts: Parts) -> None:
        self.p = parts

    def enroll(self, req: pb.EnrollRequest) -> pb.EnrollResponse:
        """All images or none: any image that cannot be used fails the request."""
        coll = self.p.collection(req.collection)
        external_id = validate.identity_id(req.identity_id)
        name = validate.display_name(req.display_name)
        metadata = validate.metadata(dict(req.metadata))
        low_ok = accept_low_quality(req.quality_filter)
        if not req.images:
            raise InvalidArgument("no images were given; send at least one photo of the person", reason=Reason.NO_FACE)
        if len(req.images) > validate.MAX_IMAGES_PER_ENROLL:
            raise InvalidArgument(f"{len(req.images)} images in one request; send at most {validate.MAX_IMAGES_PER_ENROLL}", reason=Reason.BAD_OPTION)
        refs = [validate.source_ref(img.source_ref) for img in req.images]
        shas = [sha256_hex(img.data) for img in req.images]

        known = identities.enrolled_faces(self.p.store, coll.name, external_id, shas)
        todo = [i for i, sha in enumerate(shas) if sha not in known and shas.index(sha) == i]
        names = {n: f"image {i + 1}" + (f" ({refs[i]})" if refs[i] else "") for n, i in enumerate(todo)}
        pipeline = self.p.faces_for(coll)
        observed = pipeline.analyze([req.images[i].data for i in todo], max_faces=1, names=names)
        new_faces = []
        for n, (i, faces) in enumerate(zip(todo, observed)):
            where = names[n] if len(req.images) > 1 else "the image"
            face = require_face(faces, accept_low_quality=low_ok, where=where)
            new_faces.append(pipeline.new_face(face, shas[i], refs[i]))

        identity, stored = identities.enroll(self.p.store, coll.name, external_id, name, metadata, new_faces)
        by_sha = {s.face.image_sha256: s for s in stored}
        images = []
        for i, sha in enumerate(shas):
            if sha in known:
                images.append(pb.EnrolledImage(face=convert.face_pb(known[sha], external_id), already_enrolled=True))
            else:
                entry = by_sha[sha]
                repeat = shas.index(sha) != i
                images.append(pb.EnrolledImage(face=convert.face_pb(entry.face, external_id), already_enrolled=entry.already or repeat))
        return pb.EnrollResponse(identity=convert.identity_pb(identity), images=images)

    def bulk_enroll(self, items: Iterator[pb.BulkEnrollItem]) -> Iterator[pb.BulkEnrollResult]:
        """One answer per item, in order; an item's failure never ends the stream."""
        for item in items:
            try:
                response = self.enroll(
                    pb.EnrollRequest(
                        collection=item.collection, identity_id=item.identity_id, display_name=item.display_name,
                        metadata=item.metadata, images=[item.image], quality_filter=item.quality_filter,
                    )
                )
            except FacebankError as err:
                yield pb.BulkEnrollResult(item_id=item.item_id, failure=convert.failure_pb(err))
            except Exception:  # a bug must not end the stream for the items after it
                log.exception("bulk enroll item %r failed", item.item_id)
                yield pb.BulkEnrollResult(item_id=item.item_id, failure=convert.failure_pb(InternalError("internal error; see the server log")))
            else:
                yield pb.BulkEnrollResult(item_id=item.item_id, enrolled=response.images[0])
