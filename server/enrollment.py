"""Enrollment: one identity from one or more photos, or a stream of them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator

from facebank.index import identities
from facebank.errors import FacebankError, InternalError, InvalidArgument, Reason
from facebank.server import convert, validate
from facebank.server.engine import Parts
from facebank.server.faces import naming, require_face, sha256_hex
from facebank.v1 import facebank_pb2 as pb

log = logging.getLogger(__name__)


def accept_low_quality(value: int) -> bool:
    if value not in (pb.QUALITY_FILTER_DEFAULT, pb.QUALITY_FILTER_NONE):
        raise InvalidArgument(f"quality_filter {value} is unknown; use DEFAULT or NONE", reason=Reason.BAD_OPTION)
    return value == pb.QUALITY_FILTER_NONE


@dataclass
class _Prepared:
    """One enroll request checked and read, its images waiting for (or through) the model."""

    req: pb.EnrollRequest
    coll: object
    external_id: str
    name: str
    metadata: dict
    low_ok: bool
    refs: list[str]
    shas: list[str]
    known: dict
    todo: list[int]
    names: dict[int, str]
    pipeline: object
    new_faces: list = field(default_factory=list)
    error: FacebankError | None = None


class EnrollmentService:
    def __init__(self, parts: Parts) -> None:
        self.p = parts

    def enroll(self, req: pb.EnrollRequest) -> pb.EnrollResponse:
        """All images or none: any image that cannot be used fails the request."""
        prepared = self._prepare(req)
        self._analyze([prepared])
        return self._commit(prepared)

    def bulk_enroll(self, items: Iterator[pb.BulkEnrollItem]) -> Iterator[pb.BulkEnrollResult]:
        """One answer per item, in order; an item's failure never ends the stream.

        A pipeline: a reader thread takes items off the stream; an analysis thread runs
        the model over the photos of up to BULK_GROUP items at once (decode, detection and
        recognition batched across photos); this thread writes each item in its own unit
        of work and answers it, while the next group is analysed."""
        from facebank.server.bulk_pipeline import pipelined

        def prepare_group(group: list[pb.BulkEnrollItem]) -> list:
            out = []
            for item in group:
                try:
                    out.append(self._prepare(_request(item)))
                except FacebankError as err:
                    out.append(err)
            self._analyze([p for p in out if isinstance(p, _Prepared)])
            return out

        for item, prepared in pipelined(items, prepare_group):
            try:
                if isinstance(prepared, BaseException):
                    raise prepared
                response = self._commit(prepared)
            except FacebankError as err:
                yield pb.BulkEnrollResult(item_id=item.item_id, failure=convert.failure_pb(err))
            except Exception:  # a bug must not end the stream for the items after it
                log.exception("bulk enroll item %r failed", item.item_id)
                yield pb.BulkEnrollResult(item_id=item.item_id, failure=convert.failure_pb(InternalError("internal error; see the server log")))
            else:
                yield pb.BulkEnrollResult(item_id=item.item_id, enrolled=response.images[0])

    def _prepare(self, req: pb.EnrollRequest) -> _Prepared:
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
        return _Prepared(req, coll, external_id, name, metadata, low_ok, refs, shas, known, todo, names, self.p.faces_for(coll))

    def _analyze(self, prepared: list[_Prepared]) -> None:
        """The model over every photo still to enroll, in one call per model; each request
        keeps the first error of its own photos (and only of its own)."""
        by_model: dict[int, list[_Prepared]] = {}
        for p in prepared:
            by_model.setdefault(id(p.pipeline), []).append(p)
        for group in by_model.values():
            pipeline = group[0].pipeline
            observed = iter(pipeline.analyze_each([p.req.images[i].data for p in group for i in p.todo], max_faces=1))
            for p in group:
                for n, i in enumerate(p.todo):
                    faces = next(observed)
                    if p.error is not None:
                        continue
                    where = p.names[n] if len(p.req.images) > 1 else "the image"
                    try:
                        if isinstance(faces, FacebankError):
                            raise faces if len(p.req.images) == 1 else naming(faces, where)
                        face = require_face(faces, accept_low_quality=p.low_ok, where=where)
                        p.new_faces.append(pipeline.new_face(face, p.shas[i], p.refs[i]))
                    except FacebankError as err:
                        p.error = err

    def _commit(self, p: _Prepared) -> pb.EnrollResponse:
        if p.error is not None:
            raise p.error
        identity, stored = identities.enroll(self.p.store, p.coll.name, p.external_id, p.name, p.metadata, p.new_faces)
        by_sha = {s.face.image_sha256: s for s in stored}
        images = []
        for i, sha in enumerate(p.shas):
            if sha in p.known:
                images.append(pb.EnrolledImage(face=convert.face_pb(p.known[sha], p.external_id), already_enrolled=True))
            else:
                entry = by_sha[sha]
                repeat = p.shas.index(sha) != i
                images.append(pb.EnrolledImage(face=convert.face_pb(entry.face, p.external_id), already_enrolled=entry.already or repeat))
        return pb.EnrollResponse(identity=convert.identity_pb(identity), images=images)


def _request(item: pb.BulkEnrollItem) -> pb.EnrollRequest:
    return pb.EnrollRequest(collection=item.collection, identity_id=item.identity_id, display_name=item.display_name,
                            metadata=item.metadata, images=[item.image], quality_filter=item.quality_filter)
