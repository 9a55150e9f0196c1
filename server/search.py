"""1:N search by photo or by embedding, and 1:1 verification. Open set: a
match below the threshold is not a match, and no match means "unknown"."""

from __future__ import annotations

import numpy as np

from facebank.index import identities
from facebank.errors import InvalidArgument, Reason
from facebank.index.identity_search import Hit, IdentityMatches
from facebank.server import convert, validate
from facebank.server.engine import Parts
from facebank.server.enrollment import accept_low_quality
from facebank.server.faces import require_face
from facebank.v1 import facebank_pb2 as pb


def fill_matches(matches, hits: list[Hit]) -> None:
    """Append identity matches to a repeated field in place (building messages
    apart and copying them in costs more than the search itself at batch 64)."""
    for hit in hits:
        rec = hit.identity
        match = matches.add(identity_id=rec.external_id, display_name=rec.display_name, score=hit.score, face_ids=hit.face_ids)
        if rec.metadata:  # setting an empty map costs as much as a full one
            match.metadata.update(rec.metadata)


def packed_matches(m: IdentityMatches) -> pb.PackedMatches:
    """The whole answer as arrays (see PackedMatches), with no per-match work."""
    present = m.iid > 0
    distinct = np.unique(m.iid[present])
    index = np.where(present, np.searchsorted(distinct, m.iid), -1)
    records = [m.records[iid] for iid in distinct.tolist()]
    return pb.PackedMatches(
        top_k=m.iid.shape[1], identity_ids=[r.external_id for r in records], display_names=[r.display_name for r in records],
        identities_i32=index.astype("<i4").tobytes(), scores_f32=m.score.astype("<f4").tobytes(),
        face_counts_u32=m.face_count.astype("<u4").tobytes(), face_ids_u64=m.face_ids.astype("<u8").tobytes(),
    )


class SearchService:
    def __init__(self, parts: Parts) -> None:
        self.p = parts

    def _options(self, options: pb.SearchOptions, collection_threshold: float) -> tuple[int, float, dict[str, str]]:
        top_k = validate.top_k(options.top_k)
        threshold = validate.threshold(options.threshold) if options.HasField("threshold") else collection_threshold
        return top_k, threshold, validate.metadata(dict(options.filter), "filter")

    def _matches(self, collection: str, queries: np.ndarray, options: pb.SearchOptions, threshold_default: float):
        top_k, threshold, filter_ = self._options(options, threshold_default)
        return self.p.store.search(collection, queries, top_k, filter_ or None, min_score=threshold), threshold

    def search_by_image(self, req: pb.SearchByImageRequest) -> pb.SearchByImageResponse:
        coll = self.p.collection(req.collection)
        top_k, threshold, filter_ = self._options(req.options, coll.threshold)  # bad options fail before the model runs
        low_ok = accept_low_quality(req.quality_filter)
        max_faces = validate.positive(req.max_faces, "max_faces", validate.MAX_FACES_PER_IMAGE)
        pipeline = self.p.faces_for(coll)
        found = every_face(pipeline, req.image.data, max_faces)
        faces = found if low_ok else [f for f in found if f.quality.passed]
        queries = np.asarray([f.embedding for f in faces], np.float32).reshape(len(faces), pipeline.dim)
        matches = self.p.store.search(coll.name, queries, top_k, filter_ or None, min_score=threshold) if faces else []
        response = pb.SearchByImageResponse(threshold=threshold, faces_below_quality=len(found) - len(faces))
        for face, hits in zip(faces, matches):
            fill_matches(response.faces.add(face=convert.observation_pb(face)).matches, hits)
        return response

    def search_by_embedding(self, req: pb.SearchByEmbeddingRequest) -> pb.SearchByEmbeddingResponse:
        coll = self.p.collection(req.collection)
        if req.queries_f32 and len(req.queries):
            raise InvalidArgument("give the queries either as `queries` or as `queries_f32`, not both", reason=Reason.BAD_EMBEDDING)
        if req.queries_f32:
            queries = validate.packed_embeddings(req.queries_f32, coll.dim)
        else:
            queries = validate.embeddings([q.values for q in req.queries], coll.dim)
        matches, threshold = self._matches(coll.name, queries, req.options, coll.threshold)
        if req.packed_answer:
            return pb.SearchByEmbeddingResponse(threshold=threshold, packed=packed_matches(matches))
        response = pb.SearchByEmbeddingResponse(threshold=threshold)
        for hits in matches:
            fill_matches(response.results.add().matches, hits)
        return response

    def detect_faces(self, req: pb.DetectFacesRequest) -> pb.DetectFacesResponse:
        pipeline = self.p.faces_for(self.p.collection(req.collection)) if req.collection else self.p.faces  # a scoped key names its collection
        max_faces = validate.positive(req.max_faces, "max_faces", validate.MAX_FACES_PER_IMAGE)
        return pb.DetectFacesResponse(faces=[convert.observation_pb(f) for f in every_face(pipeline, req.image.data, max_faces)])

    def verify(self, req: pb.VerifyRequest) -> pb.VerifyResponse:
        coll = self.p.collection(req.collection)
        threshold = validate.threshold(req.threshold) if req.HasField("threshold") else coll.threshold
        which = req.WhichOneof("against")
        if which is None:
            raise InvalidArgument("verify needs something to compare with: other_image, identity_id or face_id", reason=Reason.BAD_OPTION)
        if which == "other_image":
            first, second = self.p.faces_for(coll).analyze([req.image.data, req.other_image.data], max_faces=validate.MAX_FACES_PER_IMAGE, label="image")
            face = chosen_face(first, req.face, "the first image", "face")
            other = chosen_face(second, req.other_face, "the second image", "other_face")
            score = float(np.dot(face.embedding, other.embedding))
            return pb.VerifyResponse(
                match=score >= threshold, score=score, threshold=threshold,
                face=convert.observation_pb(face), other_face=convert.observation_pb(other),
                faces_in_image=len(first), face_used=req.face or 1, faces_in_other_image=len(second), other_face_used=req.other_face or 1,
            )
        vectors = self.stored_vectors(coll.name, req)
        found = self.p.faces_for(coll).analyze([req.image.data], max_faces=validate.MAX_FACES_PER_IMAGE)[0]
        face = chosen_face(found, req.face, "the image", "face")
        score = float(np.max(vectors @ face.embedding)) if len(vectors) else -1.0
        return pb.VerifyResponse(match=score >= threshold, score=score, threshold=threshold, face=convert.observation_pb(face),
                                 faces_in_image=len(found), face_used=req.face or 1)

    def stored_vectors(self, collection: str, req: pb.VerifyRequest) -> np.ndarray:
        """The stored face's vector, or every face's of the identity, that verify compares with."""
        if req.WhichOneof("against") == "face_id":
            return identities.face_vector(self.p.store, collection, req.face_id)[1][None]
        return identities.identity_vectors(self.p.store, collection, validate.identity_id(req.identity_id))[1]


def chosen_face(faces, number: int, where: str, field: str):
    """Face `number` of an image (1 = the largest; 0 means 1)."""
    face = require_face(faces, accept_low_quality=True, where=where)
    if number > len(faces):
        raise InvalidArgument(f"{field} is {number}, but {where} has {len(faces)} face(s); choose 1 to {len(faces)} (1 = the largest)",
                              reason=Reason.BAD_OPTION)
    return faces[number - 1] if number else face


def every_face(faces, data: bytes, max_faces: int):
    """Every face of one photo (max_faces 0), refusing one with more than the hard limit."""
    limit = max_faces or validate.MAX_FACES_PER_IMAGE + 1
    found = faces.analyze([data], max_faces=limit)[0]
    if not max_faces and len(found) > validate.MAX_FACES_PER_IMAGE:
        raise InvalidArgument(f"the photo has more than {validate.MAX_FACES_PER_IMAGE} faces; crop it, or send max_faces to take the largest",
                              reason=Reason.BAD_OPTION)
    return found
