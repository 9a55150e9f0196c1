"""Catalog records and embedder observations to wire messages."""

from __future__ import annotations

from facebank.embedder import FaceObservation
from facebank.errors import FacebankError
from facebank.index.records import ClusterRecord, CollectionRecord, FaceRecord, IdentityRecord, IndexSettings
from facebank.v1 import facebank_pb2 as pb

INDEX_KIND_FROM_PB = {pb.INDEX_KIND_AUTO: "auto", pb.INDEX_KIND_FLAT: "flat", pb.INDEX_KIND_IVF: "ivf", pb.INDEX_KIND_IVF_SQ8: "ivf_sq8",
                      pb.INDEX_KIND_HNSW: "hnsw"}
INDEX_KIND_TO_PB = {**{v: k for k, v in INDEX_KIND_FROM_PB.items()}, "milvus": pb.INDEX_KIND_MILVUS}


def quality_pb(q: dict) -> pb.Quality:
    return pb.Quality(
        passed=bool(q.get("passed")), reasons=list(q.get("reasons", [])), face_size=q.get("face_size", 0.0),
        detection_score=q.get("detection_score", 0.0), sharpness=q.get("sharpness", 0.0),
        yaw=q.get("yaw", 0.0), pitch=q.get("pitch", 0.0), roll=q.get("roll", 0.0),
    )


def detection_pb(box, landmarks, score: float, quality: dict) -> pb.DetectedFace:
    return pb.DetectedFace(
        box=pb.Box(x0=float(box[0]), y0=float(box[1]), x1=float(box[2]), y1=float(box[3])),
        landmarks=[pb.Point(x=float(x), y=float(y)) for x, y in landmarks],
        detection_score=float(score),
        quality=quality_pb(quality),
    )


def observation_pb(face: FaceObservation) -> pb.DetectedFace:
    return detection_pb(face.box, face.landmarks, face.detection_score, face.quality.to_dict())


def face_pb(rec: FaceRecord, identity_id: str = "", crop: bytes = b"") -> pb.Face:
    return pb.Face(
        face_id=rec.face_id, identity_id=identity_id,
        detection=detection_pb(rec.box, rec.landmarks, rec.detection_score, rec.quality),
        image_sha256=rec.image_sha256, source_ref=rec.source_ref, model_id=rec.model_id,
        created_ms=rec.created_ms, cluster_id=rec.cluster_id, crop=crop,
    )


def identity_pb(rec: IdentityRecord, faces: list[FaceRecord] | None = None) -> pb.Identity:
    return pb.Identity(
        id=rec.external_id, display_name=rec.display_name, metadata=rec.metadata, created_ms=rec.created_ms,
        face_count=rec.face_count, faces=[face_pb(f, rec.external_id) for f in faces or []],
    )


def index_options_pb(settings: IndexSettings) -> pb.IndexOptions:
    return pb.IndexOptions(kind=INDEX_KIND_TO_PB[settings.kind], nprobe=settings.nprobe, ef_search=settings.ef_search)


def collection_pb(rec: CollectionRecord, stats: dict | None = None) -> pb.Collection:
    out = pb.Collection(
        name=rec.name, model_id=rec.model_id, embedding_dim=rec.dim, index=index_options_pb(rec.index_settings),
        threshold=rec.threshold, created_ms=rec.created_ms, scratch_lease_seconds=rec.scratch_lease_s, keep_crops=rec.keep_crops,
    )
    if stats is not None:
        out.stats.CopyFrom(pb.CollectionStats(**{**stats, "active_index": INDEX_KIND_TO_PB[stats["active_index"]]}))
    return out


def cluster_pb(rec: ClusterRecord, identity_id: str = "", faces: list[pb.Face] | None = None) -> pb.Cluster:
    return pb.Cluster(
        cluster_id=rec.cluster_id, identity_id=identity_id, size=rec.size,
        representatives=rec.representatives, faces=faces or [],
    )


def receipt_pb(r: dict) -> pb.ForgetReceipt:
    v = r.get("verification", {})
    return pb.ForgetReceipt(
        sequence=r.get("sequence", 0), time_ms=r.get("time_ms", 0), collection=r.get("collection", ""),
        subject_hash=r.get("subject_hash", ""), removed={k: int(n) for k, n in r.get("removed", {}).items()},
        generation_before=r.get("generation_before", 0), generation_after=r.get("generation_after", 0),
        derived_clean=bool(r.get("derived_clean")), snapshot_rewritten=bool(r.get("snapshot_rewritten")),
        verification=pb.Verification(
            probes=v.get("probes", 0), max_score=v.get("max_score", 0.0), threshold=v.get("threshold", 0.0), passed=bool(v.get("passed")),
            method=v.get("method", ""), face_ids=v.get("face_ids", 0), returned=v.get("returned", 0), in_index=v.get("in_index", 0),
        ),
        prev_hash=r.get("prev_hash", ""), hash=r.get("hash", ""), note=r.get("note", ""), kind=r.get("kind", "forget"),
        key_id=r.get("key_id", ""), signature=r.get("signature", ""), index_removal_pending=bool(r.get("index_removal_pending")),
    )


def failure_pb(err: FacebankError) -> pb.Failure:
    return pb.Failure(code=err.code, reason=err.reason, message=err.message)
