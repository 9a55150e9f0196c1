"""Cluster records inside one catalog transaction: create, look up, recount,
and the cannot-link rule (one person appears once in a photo). Used by the
store (deleting a face) and by the clustering workflows above it."""

from __future__ import annotations

from facebank.errors import FailedPrecondition, NotFound
from facebank.index.catalog_txn import CatalogTxn
from facebank.index.clustering import quality_weight
from facebank.index.records import ClusterRecord
from facebank.index.sealed_faces import now_ms

REPRESENTATIVES = 3


def refresh_cluster(t: CatalogTxn, cid: int, cluster_id: int) -> None:
    """Recount a cluster and choose its representatives; an empty unnamed one goes."""
    cluster = t.get_cluster(cid, cluster_id)
    if cluster is None:
        return
    members = t.cluster_face_ids(cluster_id)
    if not members and not cluster.iid:
        t.delete_cluster(cid, cluster_id)
        return
    cluster.size = len(members)
    faces = [t.get_face(f) for f in members]
    ranked = sorted((f for f in faces if f), key=lambda f: -quality_weight(f.quality))
    cluster.representatives = [f.face_id for f in ranked[:REPRESENTATIVES]]
    t.put_cluster(cluster)


def new_cluster(t: CatalogTxn, cid: int, iid: int = 0, *, locked: bool = False, cluster_id: int = 0) -> ClusterRecord:
    rec = ClusterRecord(cluster_id or t.next_id("cluster"), cid, iid=iid, locked=locked, created_ms=now_ms())
    t.put_cluster(rec)
    return rec


def get_cluster(t: CatalogTxn, cid: int, cluster_id: int) -> ClusterRecord:
    rec = t.get_cluster(cid, cluster_id)
    if rec is None:
        raise NotFound(f"cluster {cluster_id} does not exist in this collection; list them with `facebank clusters`")
    return rec


def check_cannot_link(t: CatalogTxn, face_ids: list[int]) -> None:
    photos: dict[str, int] = {}
    for fid in face_ids:
        face = t.get_face(fid)
        if face.image_sha256 in photos:
            raise FailedPrecondition(
                f"faces {photos[face.image_sha256]} and {fid} come from the same photo; one person "
                "appears once in a photo, so they cannot be in one cluster"
            )
        photos[face.image_sha256] = fid
