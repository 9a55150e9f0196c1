"""Photo-collection clustering: ingest photos, cluster faces, edit and name clusters."""

from __future__ import annotations

import logging
from typing import Iterator

from facebank.index import identities
from facebank.errors import FacebankError, InternalError
from facebank.index import cluster_store
from facebank.index.cluster_job import Summary, run_pass
from facebank.index.clustering import ClusteringParams
from facebank.server import convert, validate
from facebank.server.engine import Parts
from facebank.server.identities import fill_crops
from facebank.server.faces import sha256_hex
from facebank.server.search import every_face
from facebank.v1 import facebank_pb2 as pb

log = logging.getLogger(__name__)


def clustering_params(threshold: float) -> ClusteringParams:
    """Edges need a little more than a 1:N match: a wrong merge costs a person
    more than a split (a split is one click to merge)."""
    return ClusteringParams(edge_min=threshold + 0.05)


class ClustersService:
    def __init__(self, parts: Parts) -> None:
        self.p = parts

    def ingest(self, items: Iterator[pb.IngestItem]) -> Iterator[pb.IngestResult]:
        """Every face of every photo is stored, unassigned, waiting for a pass."""
        for item in items:
            try:
                yield self._ingest_one(item)
            except FacebankError as err:
                yield pb.IngestResult(item_id=item.item_id, failure=convert.failure_pb(err))
            except Exception:  # one bad photo must not end the stream
                log.exception("ingest item %r failed", item.item_id)
                yield pb.IngestResult(item_id=item.item_id, failure=convert.failure_pb(InternalError("internal error; see the server log")))

    def _ingest_one(self, item: pb.IngestItem) -> pb.IngestResult:
        coll = self.p.collection(item.collection)
        ref = validate.source_ref(item.image.source_ref)
        sha = sha256_hex(item.image.data)
        if identities.ingested_faces(self.p.store, coll.name, sha) is None:
            pipeline = self.p.faces_for(coll)
            faces = every_face(pipeline, item.image.data, 0)
            new = [pipeline.new_face(f, sha, ref) for f in faces]
        else:
            new = []
        records, already = identities.ingest(self.p.store, coll.name, sha, new)
        return pb.IngestResult(item_id=item.item_id, faces=[convert.face_pb(r) for r in records], already_ingested=already)

    def run_clustering(self, req: pb.ClusterRequest) -> Iterator[pb.ClusterProgress]:
        coll = self.p.collection(req.collection)
        for event in run_pass(self.p.store, coll.id, clustering_params(coll.threshold), full=req.full):
            if isinstance(event, Summary):
                yield pb.ClusterProgress(stage="done", done=1, total=1, summary=pb.ClusteringSummary(**vars(event)))
            else:
                stage, done, total = event
                yield pb.ClusterProgress(stage=stage, done=done, total=total)

    def list_clusters(self, req: pb.ListClustersRequest) -> pb.ListClustersResponse:
        coll = self.p.collection(req.collection)
        clusters, waiting = cluster_store.cluster_listing(self.p.store, coll.id, req.include_faces, req.unclustered_only)
        out = pb.ListClustersResponse(
            clusters=[convert.cluster_pb(rec, name, [convert.face_pb(f, name if f.iid else "") for f in faces]) for rec, name, faces in clusters],
            unclustered=[convert.face_pb(f) for f in waiting],
        )
        if req.with_crops:
            fill_crops(self.p, [f for c in out.clusters for f in c.faces] + list(out.unclustered))
        if req.suggest:
            out.suggestions.extend(self._suggestions(coll, [f.face_id for f in waiting]))
        return out

    def _suggestions(self, coll, face_ids: list[int]) -> list[pb.FaceSuggestion]:
        """Each waiting face's best enrolled identity at or above the collection's threshold,
        from its stored embedding (nothing leaves the server but the match)."""
        if not face_ids:
            return []
        ids, vectors = self.p.store.vectors_of(face_ids, coll.dim)
        answer = self.p.store.search(coll.name, vectors, 1, min_score=coll.threshold)
        out = []
        for row, face_id in enumerate(ids.tolist()):
            for hit in answer[row][:1]:
                out.append(pb.FaceSuggestion(face_id=face_id, identity_id=hit.identity.external_id, display_name=hit.identity.display_name,
                                             score=hit.score, cluster_id=hit.identity.cluster_id))
        order = {fid: i for i, fid in enumerate(face_ids)}
        return sorted(out, key=lambda s: order[s.face_id])

    def get_cluster(self, req: pb.ClusterRef) -> pb.Cluster:
        coll = self.p.collection(req.collection)
        rec, name, faces = cluster_store.cluster_view(self.p.store, coll.id, req.cluster_id)
        out = convert.cluster_pb(rec, name, [convert.face_pb(f, name if f.iid else "") for f in faces])
        if req.with_crops:
            fill_crops(self.p, list(out.faces))
        return out

    def merge_clusters(self, req: pb.MergeClustersRequest) -> pb.Cluster:
        coll = self.p.collection(req.collection)
        rec = cluster_store.merge(self.p.store, coll.id, req.into, list(req.others))
        return self.get_cluster(pb.ClusterRef(collection=coll.name, cluster_id=rec.cluster_id))

    def split_cluster(self, req: pb.SplitClusterRequest) -> pb.Cluster:
        coll = self.p.collection(req.collection)
        rec = cluster_store.split(self.p.store, coll.id, req.cluster_id, list(req.face_ids))
        return self.get_cluster(pb.ClusterRef(collection=coll.name, cluster_id=rec.cluster_id))

    def move_faces(self, req: pb.MoveFacesRequest) -> pb.Cluster:
        coll = self.p.collection(req.collection)
        rec = cluster_store.move_faces(self.p.store, coll.id, req.into, list(req.face_ids))
        return self.get_cluster(pb.ClusterRef(collection=coll.name, cluster_id=rec.cluster_id))

    def name_cluster(self, req: pb.NameClusterRequest) -> pb.Identity:
        coll = self.p.collection(req.collection)
        external_id = validate.identity_id(req.identity_id)
        name = validate.display_name(req.display_name)
        rec = cluster_store.name(self.p.store, coll.id, req.cluster_id, external_id, name)
        _, faces = identities.identity(self.p.store, coll.name, rec.external_id)
        return convert.identity_pb(rec, faces)
